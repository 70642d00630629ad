"""PyTorch peer for the GPU-host benchmark: run a zoo ONNX graph with torch ops (cuDNN).

A small interpreter for exactly the ops the zoo uses, so PyTorch runs the *same* network
with the same weights (fp16 on the GPU), eagerly and captured in a CUDA graph.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def torch_forward(model, device, dtype):
    """A function input -> logits running `model` (ONNX) with torch on `device`."""
    import torch
    import torch.nn.functional as F

    weights = {init.name: torch.tensor(numpy_helper.to_array(init)).to(device=device, dtype=dtype)
               for init in model.graph.initializer}
    nodes = list(model.graph.node)

    def pads_of(a):
        p = a.get("pads", [0, 0, 0, 0])
        if p[0] == p[2] and p[1] == p[3]:
            return (p[0], p[1]), None
        return (0, 0), (p[1], p[3], p[0], p[2])

    def forward(x):
        env = {model.graph.input[0].name: x, **weights}
        for node in nodes:
            a, ins = _attrs(node), [env[n] if n else None for n in node.input]
            op = node.op_type
            if op == "Conv":
                pad, explicit = pads_of(a)
                data = F.pad(ins[0], explicit) if explicit else ins[0]
                out = F.conv2d(data, ins[1], ins[2] if len(ins) > 2 else None, a.get("strides", [1, 1]), pad,
                               a.get("dilations", [1, 1]), a.get("group", 1))
            elif op == "Relu":
                out = F.relu(ins[0])
            elif op == "Clip":
                out = torch.clamp(ins[0], float(ins[1]) if ins[1] is not None else None,
                                  float(ins[2]) if len(ins) > 2 and ins[2] is not None else None)
            elif op in ("MaxPool", "AveragePool"):
                pad, explicit = pads_of(a)
                data = F.pad(ins[0], explicit, value=-float("inf") if op == "MaxPool" else 0.0) if explicit else ins[0]
                fn = F.max_pool2d if op == "MaxPool" else F.avg_pool2d
                kwargs = {} if op == "MaxPool" else {"count_include_pad": bool(a.get("count_include_pad", 0))}
                out = fn(data, a["kernel_shape"], a.get("strides", a["kernel_shape"]), pad,
                         ceil_mode=bool(a.get("ceil_mode", 0)), **kwargs)
            elif op == "GlobalAveragePool":
                out = F.adaptive_avg_pool2d(ins[0], 1)
            elif op == "LRN":
                out = F.local_response_norm(ins[0], a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0))
            elif op == "Concat":
                out = torch.cat(ins, dim=a["axis"])
            elif op == "BatchNormalization":
                out = F.batch_norm(ins[0], ins[3], ins[4], ins[1], ins[2], False, 0.0, a.get("epsilon", 1e-5))
            elif op == "Flatten":
                out = torch.flatten(ins[0], a.get("axis", 1))
            elif op == "Gemm":
                w = ins[1].t() if a.get("transB", 0) else ins[1]
                out = ins[0] @ w + (ins[2] if len(ins) > 2 else 0)
            else:
                raise NotImplementedError(op)
            env[node.output[0]] = out
        return env[model.graph.output[0].name]

    return forward


def time_torch(model, x: np.ndarray, repeat: int = 50) -> dict:
    """Median ms of PyTorch fp16 on CUDA, eager and with a CUDA graph, and the fp16 output."""
    import torch

    device = torch.device("cuda")
    forward = torch_forward(model, device, torch.float16)
    data = torch.tensor(x, device=device, dtype=torch.float16)
    torch.backends.cudnn.benchmark = True
    results = {}
    with torch.inference_mode():
        for _ in range(5):
            forward(data)
        torch.cuda.synchronize()
        results["eager_ms"] = _median_ms(lambda: forward(data), repeat)
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                forward(data)
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(graph):
            out = forward(data)
        results["graph_ms"] = _median_ms(graph.replay, repeat)
        results["output"] = out.float().cpu().numpy()
    return results


def _median_ms(fn, repeat):
    import time

    import torch

    times = []
    for _ in range(repeat):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)
