"""The model as a static web page that generates in the browser: `charlstm export MODEL --web DIR`.

    DIR/index.html   the page (the playground's Generate view)
    DIR/charlstm.js  the step, the sampling and the page's code, hand-written over Float32Arrays
    DIR/style.css
    DIR/model.json   the description (parts.describe) and where each weight lies in weights.bin
    DIR/weights.bin  the weights, little-endian: float32, or int8 with float32 row scales

Nothing is fetched from the network: any static file server (`python -m http.server` in DIR) serves it, and
it works offline. The engine is a small hand-written step rather than onnxruntime-web (chosen by measurement,
benchmarks/bench_export.py): no dependency to ship (onnxruntime-web's wasm is 14 MB; the whole export of a
2 x LSTM(256) is 3.6 MB), about as fast, and the sampling is the runtime's (processors, temperature,
top-k/top-p, and NumPy's random stream, so a seed gives `charlstm generate`'s text). The matrix-vector
products run in WebAssembly SIMD (static/matvec.wat, built into charlstm.js by static/build_wasm.mjs), in
plain JavaScript where that is missing. The folder appears whole or not at all: it is written beside DIR
and renamed into place.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError
from charlstm.export import parts
from charlstm.export.onnx import quantized_with_cost

PAGE_FILES = ("index.html", "charlstm.js", "style.css")


def _weights_blob(weights: parts.StepWeights, q: Any) -> tuple[bytes, list[dict[str, Any]]]:
    """weights.bin's bytes and the manifest of its tensors (name, dtype, shape, byte offsets)."""
    out = io.BytesIO()
    manifest: list[dict[str, Any]] = []

    def put(array: np.ndarray) -> int:
        pad = (-out.tell()) % 4  # every float32 array starts on a 4-byte boundary
        out.write(b"\0" * pad)
        at = out.tell()
        out.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
        return at

    for name, value in weights.matrices().items():
        if q is not None and name in q.values:
            entry = {"name": name, "dtype": "int8", "shape": list(value.shape), "offset": put(q.values[name])}
            entry["scale_offset"] = put(q.scales[name])
        else:
            entry = {"name": name, "dtype": "float32", "shape": list(value.shape),
                     "offset": put(np.asarray(value, np.float32))}
        manifest.append(entry)
    return out.getvalue(), manifest


def page_files() -> dict[str, bytes]:
    folder = resources.files("charlstm.export") / "static"
    return {name: (folder / name).read_bytes() for name in PAGE_FILES}


def web_files(
    model: Any, *, quantize_mode: str | None = None, text: str | None = None, name: str | None = None,
    log: Any = print,
) -> dict[str, bytes]:
    """Every file of the export, by name."""
    weights = parts.step_weights(model)
    description = parts.describe(model, weights)
    q = None
    if quantize_mode is not None:
        q, cost = quantized_with_cost(model, weights, quantize_mode, text, log)
        description["quantized"] = cost
    blob, manifest = _weights_blob(weights, q)
    path = parts._runtime(model).path
    description["name"] = name or (Path(path).stem if path else "model")
    if description["name"] == "model" and path:  # runs/NAME/model.keras: the run's name
        description["name"] = Path(path).parent.name
    description["weights"] = manifest
    # JSON cannot hold -inf (the unknown id's output bias): weights.bin holds the numbers
    files = {"model.json": json.dumps(description, ensure_ascii=False).encode("utf-8"), "weights.bin": blob}
    return {**page_files(), **files}


def export_web(
    model: Any, folder: str | os.PathLike[str], *, quantize_mode: str | None = None, text: str | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Write the page's folder (whole, or not at all); returns a report (files and sizes, seconds)."""
    started = time.perf_counter()
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise CharlstmError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / "model.json").is_file():
        raise CharlstmError(f"{target}: a folder that is not an export already; give a new or empty folder")
    files = web_files(model, quantize_mode=quantize_mode, text=text, log=log)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        os.chmod(tmp, 0o755)
        if target.exists():  # an earlier export: swapped for the new one
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    sizes = {name: len(data) for name, data in files.items()}
    return {"path": str(target), "files": sizes, "bytes": sum(sizes.values()),
            "seconds": time.perf_counter() - started}


def web_zip(model: Any, name: str | None = None) -> bytes:
    """The export's folder as one zip (the playground's "Download for the web"), in memory."""
    files = web_files(model, name=name, log=None)
    folder = name or json.loads(files["model.json"])["name"]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for fname, data in files.items():
            z.writestr(f"{folder}-web/{fname}", data)
    return out.getvalue()
