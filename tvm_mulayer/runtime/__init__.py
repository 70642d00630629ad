"""The runtime layer: executables and exported artifacts, the devices they run on, input
data, deployment over TVM RPC. It needs only the TVM *runtime* (no `tvm.relax`), so an
artifact runs on a host or phone that has just libtvm_runtime."""
