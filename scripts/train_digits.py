"""Train the small CNN behind tests/data/digits (the quantization accuracy check).

The data is scikit-learn's bundled handwritten digits (1797 8x8 images, 10 classes; the
UCI optdigits test set), so it needs no download: `pip install scikit-learn` and run

    python scripts/train_digits.py            # writes tests/data/digits/

It splits the images 80/20 (stratified, seed 0), trains in plain numpy (Adam, cross
entropy) a network with the ops quantization must handle — 3x3 convs with padding on an
input with negative values (so the uint8 zero point is not 0), ReLU, max pooling and two
dense layers — and writes:

* digits_cnn.onnx: the trained network, batch 1, input "image" [1, 1, 8, 8] in [-1, 1];
* digits_test.npz: the held-out split (x [N, 1, 8, 8] float32, y [N] int64);
* digits_calib.npz: 64 training images for calibration (never test images).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "digits"


def load_split(seed: int = 0):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 8.0 - 1.0)[:, None]  # [0, 16] -> [-1, 1]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in range(10):  # stratified: 20% of each class
        members = rng.permutation(np.flatnonzero(y == label))
        test[members[: len(members) // 5]] = True
    return (x[~test], y[~test]), (x[test], y[test])


# ---- a tiny numpy network: 3x3 'same' convs through im2col --------------------------
def im2col(x):
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([padded[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=2)
    return cols.transpose(0, 3, 4, 1, 2).reshape(n * h * w, c * 9)  # rows (n, y, x), cols (c, ky, kx)


def col2im(cols, shape):
    n, c, h, w = shape
    grad = np.zeros((n, c, h + 2, w + 2), cols.dtype)
    cols = cols.reshape(n, h, w, c, 9).transpose(0, 3, 4, 1, 2)
    for k in range(9):
        i, j = divmod(k, 3)
        grad[:, :, i:i + h, j:j + w] += cols[:, :, k]
    return grad[:, :, 1:-1, 1:-1]


def conv_forward(x, w, b):
    n, _, h, wd = x.shape
    cols = im2col(x)
    out = cols @ w.reshape(len(w), -1).T + b
    return out.reshape(n, h, wd, -1).transpose(0, 3, 1, 2), cols


def conv_backward(grad, cols, x_shape, w):
    g = grad.transpose(0, 2, 3, 1).reshape(-1, len(w))
    dw = (g.T @ cols).reshape(w.shape)
    dx = col2im(g @ w.reshape(len(w), -1), x_shape)
    return dx, dw, g.sum(0)


def init(rng):
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {"c1w": he((16, 1, 3, 3), 9), "c1b": np.zeros(16, np.float32),
            "c2w": he((32, 16, 3, 3), 144), "c2b": np.zeros(32, np.float32),
            "d1w": he((512, 64), 512), "d1b": np.zeros(64, np.float32),
            "d2w": he((64, 10), 64), "d2b": np.zeros(10, np.float32)}


def forward(p, x):
    a1, cols1 = conv_forward(x, p["c1w"], p["c1b"])
    r1 = np.maximum(a1, 0)
    a2, cols2 = conv_forward(r1, p["c2w"], p["c2b"])
    r2 = np.maximum(a2, 0)
    n = len(x)
    windows = r2.reshape(n, 32, 4, 2, 4, 2)
    pooled = windows.max(axis=(3, 5))
    flat = pooled.reshape(n, -1)
    h = np.maximum(flat @ p["d1w"] + p["d1b"], 0)
    logits = h @ p["d2w"] + p["d2b"]
    return logits, (x, a1, cols1, r1, a2, cols2, r2, windows, pooled, flat, h)


def backward(p, cache, grad_logits):
    x, a1, cols1, r1, a2, cols2, r2, windows, pooled, flat, h = cache
    g = {"d2w": h.T @ grad_logits, "d2b": grad_logits.sum(0)}
    dh = (grad_logits @ p["d2w"].T) * (h > 0)
    g["d1w"], g["d1b"] = flat.T @ dh, dh.sum(0)
    dpooled = (dh @ p["d1w"].T).reshape(pooled.shape)
    mask = windows == pooled[:, :, :, None, :, None]
    mask = mask / mask.sum(axis=(3, 5), keepdims=True)  # ties share the gradient
    dr2 = (mask * dpooled[:, :, :, None, :, None]).reshape(r2.shape)
    dr1, g["c2w"], g["c2b"] = conv_backward(dr2 * (a2 > 0), cols2, r1.shape, p["c2w"])
    _, g["c1w"], g["c1b"] = conv_backward(dr1 * (a1 > 0), cols1, x.shape, p["c1w"])
    return g


def train(x, y, epochs: int, seed: int):
    rng = np.random.default_rng(seed)
    params = init(rng)
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    step, lr, beta1, beta2 = 0, 2e-3, 0.9, 0.999
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 32):
            batch = order[start:start + 32]
            logits, cache = forward(params, x[batch])
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            probs[np.arange(len(batch)), y[batch]] -= 1.0
            grads = backward(params, cache, probs / len(batch))
            step += 1
            for key, grad in grads.items():
                m, v = moments[key]
                m[:] = beta1 * m + (1 - beta1) * grad
                v[:] = beta2 * v + (1 - beta2) * grad * grad
                m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
                params[key] -= (lr * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)
        accuracy = np.mean(forward(params, x)[0].argmax(1) == y)
        print(f"epoch {epoch + 1}: training accuracy {accuracy:.4f}")
    return params


def to_onnx(p) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(v, k) for k, v in p.items()]
    nodes = [
        helper.make_node("Conv", ["image", "c1w", "c1b"], ["a1"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2w", "c2b"], ["a2"], name="conv2", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"]),
        helper.make_node("Gemm", ["f", "d1w", "d1b"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("Gemm", ["h", "d2w", "d2b"], ["logits"], name="fc2"),
    ]
    graph = helper.make_graph(nodes, "digits_cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tvm-mulayer")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args()
    (x_train, y_train), (x_test, y_test) = load_split(args.seed)
    params = train(x_train, y_train, args.epochs, args.seed)
    accuracy = np.mean(forward(params, x_test)[0].argmax(1) == y_test)
    print(f"held-out accuracy (numpy float32): {accuracy:.4f} on {len(y_test)} images")
    args.output.mkdir(parents=True, exist_ok=True)
    onnx.save(to_onnx(params), str(args.output / "digits_cnn.onnx"))
    np.savez_compressed(args.output / "digits_test.npz", x=x_test, y=y_test)
    calib = np.random.default_rng(args.seed).choice(len(x_train), 64, replace=False)
    np.savez_compressed(args.output / "digits_calib.npz", image=x_train[np.sort(calib)])
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
