"""Exports' speed and size (issue 24): the web page's step in headless Chromium, onnxruntime and the NumPy
runtime, single stream, on the same machine in one run.

    python benchmarks/bench_export.py [--steps 4000] [--ort-web DIR]

For 2 x LSTM(128) and 2 x LSTM(256) on a 64-wide embedding (random weights: speed does not depend on training;
the Treasure Island vocabulary's size), it measures characters per second of one stream for
  (a) the NumPy runtime: `model.generate`, temperature 1, plain sampling, and with the default recipe's
      20-gram ban;
  (b) the exported page (`charlstm export --web`), float32 and int8, in headless Chromium: `charlstm.bench(n)`,
      the same sampling, timed inside the page (loading not included), and its plain-JavaScript fallback;
  (c) onnxruntime (Python) running the exported step graph, with NumPy sampling (one session.run per character);
  (d) with --ort-web DIR (an npm install of onnxruntime-web: DIR holds ort.wasm.min.js and its wasm files):
      the same ONNX graph in the same Chromium through onnxruntime-web's wasm backend, one thread, argmax
      sampling in JavaScript (one session.run per character);
and the export's time and file sizes. Every engine runs once per round, in turn, for --rounds rounds; speeds are
medians, the web/NumPy ratio the median of the rounds' ratios (the machine is shared: a round's engines see
about the same load). Prints Markdown tables. Not part of the test run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import cpu_name  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]

ORT_PAGE = """<!doctype html><meta charset="utf-8"><script src="ort.wasm.min.js"></script><script>
let session = null, meta = null;
window.bench = async (steps) => {
  ort.env.wasm.numThreads = 1;
  meta = meta || await (await fetch("meta.json")).json();
  session = session || await ort.InferenceSession.create("model.onnx", {executionProviders: ["wasm"]});
  const feeds = {ids: new ort.Tensor("int64", BigInt64Array.from([0n]), [1])};
  meta.inputs.slice(1).forEach((name, k) => {
    const n = Number(name.slice(1)); feeds[name] = new ort.Tensor("float32", new Float32Array(meta.layers[n].units), [1, meta.layers[n].units]);
  });
  const t0 = performance.now();
  let id = 0n;
  for (let t = 0; t < steps; t++) {
    feeds.ids = new ort.Tensor("int64", BigInt64Array.from([id]), [1]);
    const out = await session.run(feeds);
    meta.inputs.slice(1).forEach((name) => { feeds[name] = out[name + "_out"]; });
    const z = out.logits.data; let best = 0;
    for (let i = 1; i < z.length; i++) if (z[i] > z[best]) best = i;
    id = BigInt(best);
  }
  return {chars: steps, seconds: (performance.now() - t0) / 1000};
};
</script>"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(root: Path) -> tuple[str, ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS:
        options.add_argument(flag)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    d.set_script_timeout(600)
    return d


ROUNDS = 5  # every engine once per round, in turn; figures are medians over rounds (the machine is shared)


def page_speed(driver, url: str, steps: int, script: str, ngram: int = 0) -> float:
    driver.get(url)
    driver.execute_async_script(script, 300, ngram)  # warm: the page's code compiled and tiered up
    result = driver.execute_async_script(script, steps, ngram)
    return result["chars"] / result["seconds"]


def numpy_speed(model, steps: int, ngram: int = 0) -> float:
    model.generate("t", length=300, temperature=1.0, seed=0, no_repeat_ngram=ngram)  # warm
    t0 = time.perf_counter()
    model.generate("t", length=steps, temperature=1.0, seed=1, no_repeat_ngram=ngram)
    return steps / (time.perf_counter() - t0)


def onnxruntime_speed(path: Path, steps: int) -> float:
    import onnxruntime as ort

    from charlstm.generation.sampling import sample

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    state = [np.zeros((1, i.shape[1]), np.float32) for i in inputs[1:]]
    rng = np.random.default_rng(0)
    ids = np.array([0], np.int64)
    t0 = time.perf_counter()
    for _ in range(steps):
        logits, *state = session.run(None, dict(zip(names, [ids, *state], strict=True)))
        ids = sample(logits, rng.random(1), 1.0).astype(np.int64)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--ort-web", type=Path, default=None, help="onnxruntime-web's dist folder (npm install)")
    args = parser.parse_args()

    from model_factory import build_and_save

    import charlstm.generation.model as runtime
    from charlstm.export.onnx import export_onnx
    from charlstm.export.web import export_web

    text = (DATA / "treasure_island.txt").read_text(encoding="utf-8")[:200_000]
    chars = tuple(sorted(set(text)))
    root = Path(tempfile.mkdtemp(prefix="bench-export-"))
    base, httpd = serve(root)
    driver = chromium()
    rows = []
    try:
        for units in (128, 256):
            name = f"lstm{units}"
            path = root / f"{name}.keras"
            build_and_save(path, layers=2, units=units, embedding_dim=64, chars=chars, seed=1)
            model = runtime.load(path)
            sizes, seconds = {}, {}
            for label, q in (("float32", None), ("int8", "int8")):
                t0 = time.perf_counter()
                rep = export_onnx(model, root / f"{name}-{label}.onnx", quantize_mode=q, text=text[:20_000], log=None)
                seconds[f"onnx {label}"] = time.perf_counter() - t0
                sizes[f"onnx {label}"] = rep["bytes"]
                t0 = time.perf_counter()
                rep = export_web(model, root / f"{name}-{label}", quantize_mode=q, text=text[:20_000], log=None)
                seconds[f"web {label}"] = time.perf_counter() - t0
                sizes[f"web {label}"] = rep["bytes"]
            js = ("const [steps, ngram, done] = arguments; "
                  "window.charlstm.ready.then(() => done(window.charlstm.bench(steps, ngram)))")
            part = functools.partial
            engines = {
                "numpy": part(numpy_speed, model, args.steps),
                "web float32": part(page_speed, driver, f"{base}/{name}-float32/", args.steps, js),
                "web int8": part(page_speed, driver, f"{base}/{name}-int8/", args.steps, js),
                "web js": part(page_speed, driver, f"{base}/{name}-float32/?engine=js", args.steps, js),
                "onnxruntime": part(onnxruntime_speed, root / f"{name}-float32.onnx", args.steps),
                # the default recipe's sampling: the 20-gram ban, in Python and in the page
                "numpy ban": part(numpy_speed, model, args.steps, 20),
                "web float32 ban": part(page_speed, driver, f"{base}/{name}-float32/", args.steps, js, 20),
            }
            row = {"model": f"2 x LSTM({units}), V={len(chars)}", "sizes": sizes, "export_s": seconds}
            if args.ort_web:
                site = root / f"{name}-ortweb"
                site.mkdir()
                for f in ("ort.wasm.min.js", "ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs"):
                    shutil.copy(args.ort_web / f, site / f)
                shutil.copy(root / f"{name}-float32.onnx", site / "model.onnx")
                desc = json.loads((root / f"{name}-float32" / "model.json").read_text(encoding="utf-8"))
                (site / "meta.json").write_text(json.dumps({k: desc[k] for k in ("inputs", "layers")}))
                (site / "index.html").write_text(ORT_PAGE)
                engines["ort-web"] = part(page_speed, driver, f"{base}/{name}-ortweb/", args.steps,
                                          "const [steps, ngram, done] = arguments; window.bench(steps).then(done)")
                row["ort-web bytes"] = sum(p.stat().st_size for p in site.iterdir())
            runs: dict[str, list[float]] = {k: [] for k in engines}
            for _ in range(args.rounds):
                for key, measure in engines.items():
                    runs[key].append(measure())
            row |= {k: statistics.median(v) for k, v in runs.items()}
            row["ratio"] = statistics.median(w / n for w, n in zip(runs["web float32"], runs["numpy"], strict=True))
            row["ratio ban"] = statistics.median(
                w / n for w, n in zip(runs["web float32 ban"], runs["numpy ban"], strict=True))
            row["runs"] = runs
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        driver.quit()
        httpd.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{cpu_name()}; chars/s of one stream, {args.steps} characters each, medians of {args.rounds} rounds "
          "(the ratio: the median of each round's web/NumPy)\n")
    print("Plain sampling (temperature 1, no logit processors):\n")
    print("| model | NumPy runtime | web page (wasm SIMD, float32) | web page (wasm SIMD, int8) | ratio web/NumPy "
          "| web page (plain JS fallback) | onnxruntime (Python) |"
          + (" onnxruntime-web (wasm, 1 thread, argmax) |" if args.ort_web else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if args.ort_web else ""))
    for r in rows:
        extra = f" {r['ort-web']:,.0f} |" if args.ort_web else ""
        print(f"| {r['model']} | {r['numpy']:,.0f} | {r['web float32']:,.0f} | {r['web int8']:,.0f} | "
              f"{r['ratio']:.2f}x | {r['web js']:,.0f} | {r['onnxruntime']:,.0f} |{extra}")
    print("\nThe default recipe's sampling (temperature 1, the 20-gram ban):\n")
    print("| model | NumPy runtime | web page (wasm SIMD, float32) | ratio web/NumPy |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['numpy ban']:,.0f} | {r['web float32 ban']:,.0f} | {r['ratio ban']:.2f}x |")
    print("\n| model | export | seconds | bytes |\n|---|---|---|---|")
    for r in rows:
        for k, v in r["sizes"].items():
            print(f"| {r['model']} | {k} | {r['export_s'][k]:.2f} | {v:,} |")
        if args.ort_web:
            print(f"| {r['model']} | onnxruntime-web page (wasm + js + graph) | | {r['ort-web bytes']:,} |")


if __name__ == "__main__":
    main()
