"""ONNX in, Relax out: load and check a model, import it, fold it ready for splitting."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..base.errors import MulayerError


@dataclass
class ModelInfo:
    """What the runtime needs to know about the model's interface."""

    inputs: dict  # name -> (shape, dtype)
    outputs: list  # ONNX output names, in order
    sources: dict = field(default_factory=dict)  # layer name -> ONNX node name


def load_onnx(model) -> onnx.ModelProto:
    """An ONNX ModelProto from a path or a ModelProto, with a clear error for anything else."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        path = Path(model)
        if not path.is_file():
            raise MulayerError(f"{path}: no such file; give an ONNX model file")
        try:
            proto = onnx.load(str(path))
        except Exception as err:  # protobuf's DecodeError and friends
            raise MulayerError(f"{path} is not an ONNX model ({type(err).__name__}: {err}); "
                               "export your network with torch.onnx.export or tf2onnx") from None
        if not proto.graph.node:
            raise MulayerError(f"{path} is not an ONNX model: it has no graph nodes")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0]
        raise MulayerError(f"the ONNX model does not pass onnx.checker: {first}") from None
    return proto


_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
           onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8",
           onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64"}


def model_inputs(proto: onnx.ModelProto, shapes: dict | None = None) -> dict:
    """name -> (static shape, dtype) for each real input; dynamic dims need `shapes`."""
    shapes = dict(shapes or {})
    initializers = {init.name for init in proto.graph.initializer}
    inputs = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = _DTYPES.get(tensor.elem_type)
        if dtype is None:
            raise MulayerError(f"input {value.name!r} has ONNX element type {tensor.elem_type}, "
                               "which tvm-mulayer does not feed; use float32")
        if value.name in shapes:
            shape = tuple(int(d) for d in shapes.pop(value.name))
        else:
            dims = tensor.shape.dim
            if any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
                shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
                raise MulayerError(f"input {value.name!r} has dynamic shape {shown}; give a static one "
                                   f"with --shape {value.name}=1,3,224,224 (shapes={{...}} in Python)")
            shape = tuple(int(d.dim_value) for d in dims)
        inputs[value.name] = (shape, dtype)
    if shapes:
        raise MulayerError(f"shapes given for unknown inputs {sorted(shapes)}; "
                           f"the model's inputs are {sorted(inputs)}")
    return inputs


def onnx_layer_sources(proto: onnx.ModelProto, layers) -> dict:
    """Layer name -> ONNX node name, matching Conv and Gemm/MatMul nodes in graph order."""
    initializers = {init.name for init in proto.graph.initializer}
    by_kind = {"conv": [], "dense": []}
    for index, node in enumerate(proto.graph.node):
        label = node.name or f"{node.op_type}_{index}"
        if node.op_type == "Conv":
            by_kind["conv"].append(label)
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in initializers:
            by_kind["dense"].append(label)
    ours = {"conv": [l for l in layers if l.op.startswith("conv")],
            "dense": [l for l in layers if l.op == "dense"]}
    sources = {}
    for kind, names in by_kind.items():
        if len(names) == len(ours[kind]):  # otherwise the correspondence is not certain
            sources.update({layer.name: node for layer, node in zip(ours[kind], names)})
    return sources


def prepare_for_split(mod):
    """`mod` (weights bound as constants) in the form the split works on: batch norms folded
    into the convs before them, other inference-only ops decomposed, constant subgraphs
    folded (so each layer's weight is one constant), bindings canonicalized, dead code
    removed. Every frontend's module goes through it: `mulayer compile` and the Relax
    pipeline (`tvm_mulayer.get_pipeline`) then split the same graph."""
    import tvm
    from tvm import relax

    return tvm.transform.Sequential([
        relax.transform.FoldBatchnormToConv2D(),
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(["main"]),
    ])(mod)


def import_onnx(model, shapes: dict | None = None):
    """(Relax IRModule with weights as constants, folded; ModelInfo)."""
    from tvm.relax.frontend.onnx import from_onnx

    from ..base.layers import find_layers

    proto = load_onnx(model)
    inputs = model_inputs(proto, shapes)
    for node in proto.graph.node:  # TVM's importer would silently compute inference-mode BN
        if node.op_type == "BatchNormalization" and any(a.name == "training_mode" and a.i for a in node.attribute):
            raise MulayerError(f"BatchNormalization {node.name or node.output[0]!r} has training_mode=1; "
                               "tvm-mulayer runs inference only: export the model in eval mode")
    try:
        mod = from_onnx(proto, shape_dict={n: s for n, (s, _) in inputs.items()},
                        keep_params_in_input=False)
    except Exception as err:  # the importer raises many types; the message names the op
        text = str(err).strip().splitlines()
        reason = next((line for line in reversed(text) if line.strip()), type(err).__name__)
        raise MulayerError(f"TVM cannot import this ONNX model: {reason.strip()}") from None
    mod = prepare_for_split(mod)
    layers = find_layers(mod["main"])
    outputs = [value.name for value in proto.graph.output]
    return mod, ModelInfo(inputs, outputs, onnx_layer_sources(proto, layers))
