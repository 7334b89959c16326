"""Record fixed-seed outputs of every generation path, to compare the code before and after a change.

    PYTHONPATH=src python tests/tools/record_generation.py OUT.json [--compare BEFORE.json]

Models are written by tests/numpy_model.py (seeded NumPy weights, no Keras), so the same files come out on
every run. Records `generate`/`stream` for many settings, `next_chars`, `score`, `evaluate`, `items`, and the
server's /api/generate, /api/next, /api/score and /v1/completions answers (timings dropped). Texts depend on
float32 rounding, so compare recordings made on one machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from numpy_model import write_model  # noqa: E402

SETTINGS: list[dict] = [
    {},
    {"temperature": 0},
    {"temperature": 0.5},
    {"temperature": 1.3, "top_k": 4},
    {"temperature": 0.9, "top_p": 0.8},
    {"min_p": 0.1},
    {"typical_p": 0.7},
    {"top_k": 6, "top_p": 0.9, "min_p": 0.05, "typical_p": 0.9},
    {"repetition_penalty": 1.4},
    {"repetition_penalty": 0.8, "temperature": 0.7},
    {"presence_penalty": 0.8, "frequency_penalty": 0.3},
    {"no_repeat_ngram": 3, "temperature": 0.4},
    {"no_repeat_ngram": 0},
    {"no_repeat_ngram": 1},
    {"logit_bias": {4: 3.0, 5: -100.0}},
    {"stop": "e"},
    {"stop": ["at", "o "], "num_samples": 3},
    {"num_samples": 4, "temperature": 0.8},
    {"num_samples": 3, "top_p": 0.9, "no_repeat_ngram": 4, "presence_penalty": 0.5},
    {"context": "window"},
    {"context": "window", "num_samples": 2, "temperature": 0.6},
    {"max_repeat": 1},
    {"max_repeat": "none", "temperature": 0.2},
    {"max_repeat": "auto", "temperature": 0.2},
    {"unknown": "skip", "prime": "the Zcat"},
    {"unknown": "replace", "prime": "the Zcat"},
    {"prime": None},
    {"prime": None, "num_samples": 2},
    {"length": 0},
    {"length": 1},
]


def record() -> dict:
    from fastapi.testclient import TestClient

    from charlstm.generation.model import load
    from charlstm.server import Limits, create_app, load_entries

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            "mixed": write_model(Path(tmp) / "mixed.keras"),
            "lstm2": write_model(Path(tmp) / "lstm2.keras", cells=("lstm", "lstm"), seed=1, has_unknown=False),
            "classic": write_model(Path(tmp) / "classic.keras", cells=("lstm",), seed=2, window=12),
            "items": write_model(Path(tmp) / "items.keras", cells=("gru",), seed=3, meta={
                "items": {"boundary": "\n", "max_len": 12, "fingerprints": {}}}),
        }
        for name in ("mixed", "lstm2", "classic"):
            model = load(paths[name])
            for n, s in enumerate(SETTINGS):
                s = dict(s)
                prime = s.pop("prime", "the cat ")
                length = s.pop("length", 120)
                key = f"{name}/{n}/{json.dumps(s, sort_keys=True)}"
                for seed in (0, 7):
                    try:
                        text = model.generate(prime, length, seed=seed, **s)
                        streamed = list(model.stream(prime, length, seed=seed, **s))
                        out[f"{key}/seed{seed}/generate"] = text
                        out[f"{key}/seed{seed}/stream"] = streamed
                    except Exception as exc:  # noqa: BLE001 - an error is an output too
                        out[f"{key}/seed{seed}/error"] = f"{type(exc).__name__}: {exc}"
            out[f"{name}/next"] = model.next_chars("the ca", 6, temperature=0.8)
            out[f"{name}/next_ngram"] = model.next_chars("the cat the ca", 6, no_repeat_ngram=3, top_p=0.9)
            sc = model.score("the cat sat on a mat, the dog", top=3)
            out[f"{name}/score"] = [sc.text, sc.logprobs.round(6).tolist(), sc.top_ids.tolist(),
                                    sc.top_logprobs.round(6).tolist(), sc.summary()]
            text = "the cat sat on a mat, the dog ran. " * 40
            out[f"{name}/evaluate"] = [model.evaluate(text), model.evaluate(text, context="window", window=9)]
            for bad in ({"temperature": -1}, {"top_p": 0}, {"top_k": 0}, {"min_p": 2}, {"typical_p": 0},
                        {"num_samples": 0}, {"length": -1}, {"context": "x"}, {"max_repeat": 0},
                        {"no_repeat_ngram": -1}, {"repetition_penalty": 0}, {"logit_bias": {99: 1.0}},
                        {"logprobs": -1}, {"presence_penalty": float("nan")}):
                try:
                    model.generate("the", 5, **bad)
                    out[f"{name}/bad/{bad}"] = "no error"
                except Exception as exc:  # noqa: BLE001
                    out[f"{name}/bad/{bad}"] = f"{type(exc).__name__}: {exc}"
        items = load(paths["items"])
        out["items"] = [i.to_json() for i in items.items(5, 0.9, seed=3)]
        out["items_new"] = [i.to_json() for i in items.items(3, 1.0, seed=4, top_k=5, only_new=True)]

        app = create_app(load_entries([str(p) for p in paths.values()]), Limits())
        requests = [
            ("/api/generate", {"model": "mixed", "prime": "the ", "length": 80, "seed": 1}),
            ("/api/generate", {"model": "mixed", "prime": "the ", "length": 80, "seed": 2, "num_samples": 3,
                               "temperature": 0.7, "top_k": 5, "stop": ["e ", "at"]}),
            ("/api/generate", {"model": "lstm2", "length": 60, "seed": 3, "min_p": 0.1, "typical_p": 0.8,
                               "no_repeat_ngram": 3, "repetition_penalty": 1.2}),
            ("/api/generate", {"model": "classic", "prime": "a rose", "length": 60, "seed": 4}),
            ("/api/generate", {"model": "items", "length": 30, "seed": 5, "num_samples": 3}),
            ("/api/generate", {"model": "mixed", "prime": "the Z", "length": 10, "seed": 1}),
            ("/api/generate", {"model": "mixed", "prime": "the Z", "length": 10, "seed": 1, "unknown": "skip"}),
            ("/api/generate", {"model": "mixed", "prime": "the", "length": 10, "seed": 1,
                               "no_repeat_ngram": 1, "repetition_penalty": 1e-9}),
            ("/api/next", {"model": "mixed", "prefix": "the ca", "k": 5, "temperature": 0.7, "top_p": 0.9}),
            ("/api/next", {"model": "mixed", "prefix": "the cZ", "k": 5}),
            ("/api/next", {"model": "mixed", "prefix": "the c", "k": 5, "min_p": 0.3, "no_repeat_ngram": 2}),
            ("/api/score", {"model": "lstm2", "text": "the cat sat"}),
            ("/api/score", {"model": "lstm2", "text": "the cZt"}),
            ("/v1/completions", {"model": "mixed", "prompt": "the ", "max_tokens": 40, "seed": 1}),
            ("/v1/completions", {"model": "mixed", "prompt": ["the ", "a c"], "max_tokens": 30, "seed": 2, "n": 2,
                                 "temperature": 0.8, "top_p": 0.9, "stop": "at", "logprobs": 2, "echo": True,
                                 "presence_penalty": 0.5, "frequency_penalty": 0.4, "logit_bias": {"5": 2.0}}),
            ("/v1/completions", {"model": "lstm2", "prompt": "the", "max_tokens": 0, "echo": True, "logprobs": 3}),
            ("/v1/completions", {"model": "mixed", "prompt": "the ", "max_tokens": 30, "seed": 3, "stream": True,
                                 "logprobs": 1, "stop": ["e"]}),
            ("/v1/completions", {"model": "mixed", "prompt": "the ", "max_tokens": 5, "logit_bias": {"999": 1}}),
            ("/v1/completions", {"model": "mixed", "prompt": "the ", "max_tokens": 5, "best_of": 3, "seed": 5}),
            ("/v1/completions", {"model": "mixed", "prompt": "the ", "max_tokens": 5, "top_k": -1, "seed": 9}),
            ("/api/stream", {"model": "mixed", "prime": "the ", "length": 40, "seed": 6, "num_samples": 2}),
        ]
        with TestClient(app) as client:
            for n, (url, body) in enumerate(requests):
                r = client.post(url, json=body)
                if "stream" in url or body.get("stream"):
                    value = _join_stream(r.text)
                else:
                    value = r.json()
                    if isinstance(value, dict):
                        for k in ("seconds", "id", "created"):
                            value.pop(k, None)
                out[f"server/{n}{url}/{json.dumps(body, sort_keys=True)}"] = [r.status_code, value]
    return out


def _join_stream(body: str) -> list:
    """An SSE body as (event, data) pairs without timings and ids; text events joined per sample."""
    events = []
    for raw in body.split("\n\n"):
        name, data = "message", []
        for line in raw.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if not data:
            continue
        text = "\n".join(data)
        value = text if text == "[DONE]" else json.loads(text)
        if isinstance(value, dict):
            for k in ("seconds", "id", "created"):
                value.pop(k, None)
        events.append([name, value])
    # characters arrive in chunks that depend on timing: join the text events per sample / choice
    joined: dict = {}
    rest = []
    for name, value in events:
        if name == "text":
            for b, t in enumerate(value["texts"]):
                joined[f"sample{b}"] = joined.get(f"sample{b}", "") + t
        elif isinstance(value, dict) and value.get("object") == "text_completion" and value["choices"]:
            for c in value["choices"]:
                k = f"choice{c['index']}"
                j = joined.setdefault(k, {"text": "", "tokens": [], "finish": None})
                j["text"] += c["text"]
                if c.get("logprobs"):
                    j["tokens"] += list(zip(c["logprobs"]["tokens"], c["logprobs"]["token_logprobs"],
                                            c["logprobs"]["text_offset"], strict=True))
                j["finish"] = c["finish_reason"] or j["finish"]
        else:
            rest.append([name, value])
    return [joined, rest]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--compare")
    args = parser.parse_args()
    got = json.loads(json.dumps(record()))
    Path(args.out).write_text(json.dumps(got, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"{len(got)} outputs recorded in {args.out}")
    if args.compare:
        want = json.loads(Path(args.compare).read_text(encoding="utf-8"))
        differ = [k for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
        for k in differ[:20]:
            print(f"DIFFERS {k}\n  before: {str(want.get(k))[:300]}\n  after:  {str(got.get(k))[:300]}")
        print(f"{len(want)} before, {len(got)} after, {len(differ)} differ")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
