#!/usr/bin/python3
"""Quantizes export_onnx.py's BERT for the INT8 ONNX Runtime peer, dynamically.

    /usr/bin/python3 bench/peers/quantize_onnx.py --in M.onnx --out M-int8.onnx [--style ops|contrib] [--force]

The recipe of ONNX Runtime's quantize_dynamic, written here from the ONNX
operators' semantics: every MatMul whose second input is a float
initializer (the linear layers' weights; attention's activation-activation
products stay float) gets its weight quantized once, per output column,
symmetric int8 (scale max|w|/127, zero point 0), and its input quantized at
run time to uint8 per tensor with an asymmetric scale and zero point:

  ops (default): DynamicQuantizeLinear(x) -> x_q, x_scale, x_zero;
      MatMulInteger(x_q, W_q, x_zero) -> int32; Cast to float;
      Mul(that, x_scale * w_scale). The exported Add(product, bias) stays.
      ONNX Runtime fuses MatMulInteger+Cast+Mul+Mul+Add into
      com.microsoft.MatMulIntegerToFloat (bias included), and that with its
      DynamicQuantizeLinear into com.microsoft.DynamicQuantizeMatMul when
      nothing else reads the quantized input. An input read by several
      MatMuls (query, key and value) is quantized once and shared, as
      quantize_dynamic does, which leaves those three MatMulIntegerToFloat.
  contrib: com.microsoft.DynamicQuantizeMatMul(x, W_q, w_scale, , bias) for
      every weight MatMul, the bias Add folded in; each input is quantized
      by each MatMul that reads it.

The weight zero point, 0 by construction, is left out (an absent zero point
is 0), which also keeps ONNX Runtime off its per-column zero-point path.
Skips the work when --out is newer than --in and this script, unless --force.
"""

import argparse
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"


def quantize_weight(w):
    """Symmetric int8 per output column of a [K, N] weight: w ~ q * scale[n]."""
    amax = np.abs(w).max(axis=0)
    # An all-zero column would get scale 0 and 0/0 codes; any scale codes it as 0.
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def quantize(m, style):
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    readers = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    for o in g.output:
        readers[o.name] = readers.get(o.name, 0) + 1
    producer_add = {}  # product name -> the Add(product, bias initializer) that reads it alone
    for n in g.node:
        if n.op_type == "Add" and len(n.input) == 2 and n.input[1] in inits and readers.get(n.input[0]) == 1:
            producer_add[n.input[0]] = n

    def is_weight(n):
        if n.op_type != "MatMul" or n.input[1] not in inits:
            return False
        t = inits[n.input[1]]
        return t.data_type == TensorProto.FLOAT and len(t.dims) == 2

    nodes, new_inits, dropped = [], [], set()
    quantized_inputs = {}  # float tensor -> its DynamicQuantizeLinear outputs
    folded = set()  # Adds folded into a DynamicQuantizeMatMul
    count = 0
    for n in g.node:
        if id(n) in folded:
            continue
        if not is_weight(n):
            nodes.append(n)
            continue
        count += 1
        x, wname, y = n.input[0], n.input[1], n.output[0]
        q, scale = quantize_weight(numpy_helper.to_array(inits[wname]))
        base = "%s_int8" % wname
        new_inits += [numpy_helper.from_array(q, base), numpy_helper.from_array(scale, base + "_scale")]
        readers[wname] -= 1
        if readers[wname] == 0:
            dropped.add(wname)
        if style == "contrib":
            bias = ""
            add = producer_add.get(y)
            if add is not None and len(inits[add.input[1]].dims) == 1:
                bias, y = add.input[1], add.output[0]
                folded.add(id(add))
            nodes.append(helper.make_node("DynamicQuantizeMatMul", [x, base, base + "_scale", "", bias], [y],
                                          name=n.name + "_dqmm", domain=MS_DOMAIN))
            continue
        if x not in quantized_inputs:
            xq = (x + "_quant", x + "_scale", x + "_zero_point")
            nodes.append(helper.make_node("DynamicQuantizeLinear", [x], list(xq), name=x + "_dql"))
            quantized_inputs[x] = xq
        xq, xs, xz = quantized_inputs[x]
        nodes += [
            helper.make_node("MatMulInteger", [xq, base, xz], [y + "_int32"], name=n.name + "_int"),
            helper.make_node("Cast", [y + "_int32"], [y + "_float"], name=n.name + "_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [xs, base + "_scale"], [y + "_rescale"], name=n.name + "_scales"),
            helper.make_node("Mul", [y + "_float", y + "_rescale"], [y], name=n.name + "_rescaled"),
        ]
    if count == 0:
        raise SystemExit("no MatMul with a float weight initializer: is this export_onnx.py's model?")
    del g.node[:]
    g.node.extend(nodes)
    kept = [t for t in g.initializer if t.name not in dropped]
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    if style == "contrib" and not any(o.domain == MS_DOMAIN for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return count


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in", dest="src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--style", choices=("ops", "contrib"), default="ops")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    if (not a.force and os.path.exists(a.out)
            and os.path.getmtime(a.out) > max(os.path.getmtime(a.src), os.path.getmtime(__file__))):
        return
    t = time.time()
    m = onnx.load(a.src)
    n = quantize(m, a.style)
    onnx.checker.check_model(m)
    tmp = a.out + ".tmp"
    onnx.save(m, tmp)
    os.replace(tmp, a.out)
    print("%s: %d MatMuls quantized (%s, onnx %s) in %.1f s" % (a.out, n, a.style, onnx.__version__, time.time() - t),
          file=sys.stderr)


if __name__ == "__main__":
    main()
