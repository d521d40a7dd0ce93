#!/usr/bin/python3
"""Checks quantize_onnx.py (TestQuantizeONNX): quantizes a small graph made
here in both styles and evaluates float and quantized graphs with numpy
from the ONNX operators' definitions (DynamicQuantizeLinear, MatMulInteger,
com.microsoft.DynamicQuantizeMatMul as documented), independently of any
runtime.

    /usr/bin/python3 bench/peers/testdata/quantize_check.py TMPDIR
"""

import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "quantize_onnx.py")
K, N, M = 48, 40, 24


def build(path, rng):
    """x [2, 5, K] -> h = x W1 + b1 -> y = h W2 + b2; g = x W3 (x shared,
    no bias); z = x x^T (activations only: stays float). W3's column 7 is
    all zero."""
    w = {
        "W1": rng.normal(0, 0.05, (K, N)), "b1": rng.normal(0, 0.1, N),
        "W2": rng.normal(0, 0.05, (N, M)), "b2": rng.normal(0, 0.1, M),
        "W3": rng.normal(0, 0.05, (K, N)),
    }
    w["W3"][:, 7] = 0
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["p1"], name="mm1"),
        helper.make_node("Add", ["p1", "b1"], ["h"], name="add1"),
        helper.make_node("MatMul", ["h", "W2"], ["p2"], name="mm2"),
        helper.make_node("Add", ["p2", "b2"], ["y"], name="add2"),
        helper.make_node("MatMul", ["x", "W3"], ["g"], name="mm3"),
        helper.make_node("Transpose", ["x"], ["xt"], name="tr", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x", "xt"], ["z"], name="mm4"),
    ]
    f = TensorProto.FLOAT
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", f, [2, 5, K])],
                          [helper.make_tensor_value_info(n, f, s) for n, s in (("y", [2, 5, M]), ("g", [2, 5, N]), ("z", [2, 5, 5]))],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    onnx.save(m, path)


def dql(x):
    """ONNX DynamicQuantizeLinear: uint8, the range widened to hold 0."""
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = np.float32((hi - lo) / 255)
    zp = np.uint8(np.clip(np.rint(-lo / scale), 0, 255))
    q = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8)
    return q, scale, zp


def run(m, x):
    env = {"x": x}
    env.update({t.name: numpy_helper.to_array(t) for t in m.graph.initializer})
    for n in m.graph.node:
        a = [env[i] if i else None for i in n.input]
        if n.op_type == "MatMul":
            out = [np.matmul(a[0], a[1])]
        elif n.op_type == "Add":
            out = [a[0] + a[1]]
        elif n.op_type == "Mul":
            out = [np.float32(a[0] * a[1]) if np.ndim(a[0]) == 0 and np.ndim(a[1]) == 0 else a[0] * a[1]]
        elif n.op_type == "Transpose":
            out = [np.transpose(a[0], n.attribute[0].ints)]
        elif n.op_type == "Cast":
            assert n.attribute[0].i == TensorProto.FLOAT
            out = [a[0].astype(np.float32)]
        elif n.op_type == "DynamicQuantizeLinear":
            out = list(dql(a[0]))
        elif n.op_type == "MatMulInteger":
            bzp = a[3] if len(a) > 3 else 0
            out = [np.matmul(a[0].astype(np.int32) - np.int32(a[2]), a[1].astype(np.int32) - np.int32(bzp))]
        elif n.op_type == "DynamicQuantizeMatMul" and n.domain == "com.microsoft":
            q, s, zp = dql(a[0])
            acc = np.matmul(q.astype(np.int32) - np.int32(zp), a[1].astype(np.int32)).astype(np.float32)
            out = [acc * (s * a[2])]
            if len(a) > 4 and a[4] is not None:
                out[0] = out[0] + a[4]
        else:
            raise SystemExit("unexpected node %s %s" % (n.domain, n.op_type))
        env.update(zip(n.output, out))
    return [env[o.name] for o in m.graph.output]


def main():
    tmp = sys.argv[1]
    rng = np.random.default_rng(7)
    src = os.path.join(tmp, "f32.onnx")
    build(src, rng)
    x = rng.normal(0, 1, (2, 5, K)).astype(np.float32)
    want = run(onnx.load(src), x)
    outs = {}
    for style in ("ops", "contrib"):
        dst = os.path.join(tmp, style + ".onnx")
        subprocess.run([sys.executable, SCRIPT, "--in", src, "--out", dst, "--style", style], check=True)
        m = onnx.load(dst)
        onnx.checker.check_model(m)
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        ops = [n.op_type for n in m.graph.node]
        # The weights: int8 per output column, symmetric, the column's
        # largest magnitude at 127, each within half a step of the float.
        for name in ("W1", "W2", "W3"):
            assert name not in inits, "%s: float weight %s kept" % (style, name)
            q, s = inits[name + "_int8"], inits[name + "_int8_scale"]
            w = numpy_helper.to_array(onnx.load(src).graph.initializer[["W1", "b1", "W2", "b2", "W3"].index(name)])
            assert q.dtype == np.int8 and s.shape == (w.shape[1],), (q.dtype, s.shape)
            assert np.abs(q).max() <= 127
            live = np.abs(w).max(axis=0) > 0
            assert (np.abs(q).max(axis=0)[live] == 127).all(), "%s %s: a column does not reach 127" % (style, name)
            assert (q[:, ~live] == 0).all() and (s > 0).all()
            assert (np.abs(q * s - w) <= s / 2 * (1 + 1e-6)).all(), "%s %s: off by more than half a step" % (style, name)
        if style == "ops":
            # x is quantized once for W1 and W3; x x^T stays float.
            assert ops.count("DynamicQuantizeLinear") == 2 and ops.count("MatMulInteger") == 3, ops
            assert ops.count("MatMul") == 1 and ops.count("Add") == 2, ops
        else:
            assert ops.count("DynamicQuantizeMatMul") == 3 and ops.count("MatMul") == 1 and ops.count("Add") == 0, ops
        got = run(m, x)
        outs[style] = got
        for name, g, w in zip(("y", "g", "z"), got, want):
            err = float(np.abs(g - w).max())
            cos = float((g * w).sum() / np.sqrt((g * g).sum() * (w * w).sum()))
            print("%s %s: max abs error %.3g of max |%s| %.3g, cosine %.6f" % (style, name, err, name, np.abs(w).max(), cos))
            if name == "z":
                assert err == 0, "x x^T was quantized"
            else:
                assert 0 < err < 0.03 * np.abs(w).max() and cos > 0.999, (style, name, err, cos)
    # The two styles compute the same integers and scales.
    for a, b in zip(outs["ops"], outs["contrib"]):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    main()
