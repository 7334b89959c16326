"""The model as an ONNX *step* graph: `charlstm export MODEL --onnx OUT.onnx`.

    inputs:  ids (B,) int64, then every layer's state: h0 (B, u0), c0 (B, u0) for an LSTM, h1 ...
    outputs: logits (B, V) float32 (the unknown id at -inf), then the new states in the inputs' order

Built from the `onnx` package's helpers with plain operators (Gather, MatMul, Add, Split, Sigmoid, Tanh, Mul,
Sub), as the NumPy runtime computes the step, rather than ONNX's LSTM/GRU operators: one graph for every
layer stack the runtime runs, and nothing to remap (ONNX's LSTM orders its gates i, o, f, c and wants a
sequence axis). With `quantize_mode="int8"` each matrix is an int8 initializer with per-row scales, turned back
to float32 by DequantizeLinear inside the graph. The model's description (parts.describe: vocabulary,
preprocessing, sampling defaults, special symbols) is in metadata_props["charlstm"] as JSON.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError
from charlstm.export import parts, quantize
from charlstm.export.parts import StepWeights

OPSET = 17
IR_VERSION = 8  # read by every onnxruntime since 1.10


def _need_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise CharlstmError("ONNX export needs the onnx package: pip install 'charlstm[onnx]'") from None
    return onnx


def build_graph(weights: StepWeights, description: dict[str, Any], q: quantize.Quantized | None = None) -> Any:
    """The ONNX ModelProto of one step."""
    onnx = _need_onnx()
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    count = [0]

    def tmp(base: str) -> str:
        count[0] += 1
        return f"{base}_{count[0]}"

    def node(op: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or tmp(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def weight(name: str, value: np.ndarray) -> str:
        if q is not None and name in q.values:
            inits.append(numpy_helper.from_array(q.values[name], f"{name}.q"))
            inits.append(numpy_helper.from_array(q.scales[name], f"{name}.scale"))
            inits.append(numpy_helper.from_array(np.zeros(len(q.scales[name]), np.int8), f"{name}.zero"))
            return node("DequantizeLinear", [f"{name}.q", f"{name}.scale", f"{name}.zero"], name, axis=0)
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def split(x: str, units: int, parts_: int) -> list[str]:
        sizes = f"split{units}x{parts_}"
        if not any(i.name == sizes for i in inits):
            inits.append(numpy_helper.from_array(np.full(parts_, units, np.int64), sizes))
        outs = [tmp("gate") for _ in range(parts_)]
        nodes.append(helper.make_node("Split", [x, sizes], outs, axis=1))
        return outs

    matrices = weights.matrices()
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", weights.vocab_size])]
    x = node("Gather", [weight("table", matrices["table"]), "ids"], axis=0)
    h = ""
    for n, layer in enumerate(weights.layers):
        u = layer.units
        for s in layer.state_names:
            inputs.append(helper.make_tensor_value_info(f"{s}{n}", TensorProto.FLOAT, ["batch", u]))
            outputs.append(helper.make_tensor_value_info(f"{s}{n}_out", TensorProto.FLOAT, ["batch", u]))
        if n > 0:
            x = node("Add", [node("MatMul", [h, weight(f"layer{n}.kernel", matrices[f"layer{n}.kernel"])]),
                             weight(f"layer{n}.input_bias", matrices[f"layer{n}.input_bias"])])
        rec = weight(f"layer{n}.recurrent", matrices[f"layer{n}.recurrent"])
        if layer.cell == "lstm":
            z = node("Add", [x, node("MatMul", [f"h{n}", rec])])  # (B, 4u): i, f, c, o
            gi, gf, gc, go = split(z, u, 4)
            i, f, o = node("Sigmoid", [gi]), node("Sigmoid", [gf]), node("Sigmoid", [go])
            c = node("Add", [node("Mul", [f, f"c{n}"]), node("Mul", [i, node("Tanh", [gc])])], f"c{n}_out")
            h = node("Mul", [o, node("Tanh", [c])], f"h{n}_out")
        else:
            r_all = node("Add", [node("MatMul", [f"h{n}", rec]),
                                 weight(f"layer{n}.recurrent_bias", matrices[f"layer{n}.recurrent_bias"])])
            xz, xr, xh = split(x, u, 3)
            rz, rr, rh = split(r_all, u, 3)
            zg = node("Sigmoid", [node("Add", [xz, rz])])
            rg = node("Sigmoid", [node("Add", [xr, rr])])
            hh = node("Tanh", [node("Add", [xh, node("Mul", [rg, rh])])])
            # z * h + (1 - z) * hh, as (h - hh) * z + hh
            h = node("Add", [node("Mul", [node("Sub", [f"h{n}", hh]), zg]), hh], f"h{n}_out")
    node("Add", [node("MatMul", [h, weight("dense.kernel", matrices["dense.kernel"])]),
                 weight("dense.bias", matrices["dense.bias"])], "logits")
    graph = helper.make_graph(nodes, "charlstm_step", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="charlstm", ir_version=IR_VERSION)
    helper.set_model_props(model, {"charlstm": json.dumps(description, ensure_ascii=False)})
    model.doc_string = (
        "One time step of a charlstm character model: feed ids (B,) and the states, get logits and new states. "
        "metadata_props['charlstm'] (JSON) holds the vocabulary, preprocessing and sampling defaults."
    )
    onnx.checker.check_model(model)
    return model


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    *,
    quantize_mode: str | None = None,
    text: str | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Write the step graph to `path` atomically; returns a report (sizes, seconds, 8-bit loss cost)."""
    from charlstm.fileio import write_atomic

    started = time.perf_counter()
    if os.path.isdir(path):
        raise CharlstmError(f"{path}: a folder; give the .onnx file to write")
    weights = parts.step_weights(model)
    description = parts.describe(model, weights)
    report: dict[str, Any] = {"path": os.fspath(path), "parameters": weights.parameters()}
    q = None
    if quantize_mode is not None:
        q, cost = quantized_with_cost(model, weights, quantize_mode, text, log)
        description["quantized"] = cost
        report["quantized"] = cost
    data = build_graph(weights, description, q).SerializeToString()
    write_atomic(path, data)
    report |= {"bytes": len(data), "seconds": time.perf_counter() - started}
    return report


def quantized_with_cost(
    model: Any, weights: StepWeights, mode: str, text: str | None, log: Any
) -> tuple[quantize.Quantized, dict[str, Any]]:
    """Quantize, and measure and print what it costs (the exports' shared step)."""
    if mode not in quantize.QUANTIZE:
        raise CharlstmError(f"--quantize must be one of {', '.join(quantize.QUANTIZE)}, got {mode!r}")
    q = quantize.quantize(weights)
    ids, where = quantize.measure_text(model, text)
    cost = quantize.loss_cost(weights, q, ids)
    record = {"mode": mode, "scales": "per row", "measured_on": where, **{k: round(v, 6) for k, v in cost.items()}}
    if log is not None:
        log(
            f"int8 weights: loss {cost['int8_nats']:.4f} nats/char against float32's {cost['float32_nats']:.4f} "
            f"({cost['cost_nats']:+.5f} nats/char, {parts.nats_to_bits(cost['cost_nats']):+.5f} bits/char) "
            f"on {where}"
        )
    return q, record


def read_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The charlstm description kept in an exported ONNX file's metadata."""
    onnx = _need_onnx()
    proto = onnx.load(os.fspath(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if "charlstm" not in props:
        raise CharlstmError(f"{path}: not an ONNX file exported by charlstm (no 'charlstm' metadata)")
    return json.loads(props["charlstm"])
