"""The compiler layer: ONNX import, calibration of the int8 slices, lowering a Plan through
the passes (tvm_mulayer.passes) and schedules (tvm_mulayer.schedules) to one executable."""
