"""The server under load (issue 9): 1, 8 and 32 concurrent streaming clients on loopback.

    python benchmarks/bench_serve.py [--seconds 60] [--length 1000] [--clients 1,8,32] [--readme]

Starts `charlstm serve` on a model of the default architecture (2 x LSTM(128) on a 64-wide embedding, random
weights: speed does not depend on training) in its own process, then for each client count runs that many
clients in one asyncio process for `--seconds`, each sending `POST /api/stream` requests of `--length`
characters back to back (a new seed each time). Reports requests/s, aggregate characters/s, p50/p99 time to the
first text chunk and to the end, errors (429s apart), and the server's RSS before and after. Everything is
bounded: no request starts after the time is up, every request has a timeout, the server is stopped at the end.
The clients share the machine's cores with the server, as they would on one box. Not part of the test run.
With --readme the results replace the "## Web server under load (issue 9)" section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import cpu_name, replace_readme_section  # noqa: E402

README = HERE / "README.md"
SECTION = "## Web server under load (issue 9)"
VOCAB = tuple(sorted(set("abcdefghijklmnopqrstuvwxyz0123456789 \n.,;:!?'\"-()[]*_&$")))  # ~ the lesson's 60
PRIME = "the sea was calm and the ship lay at anchor "
TARGETS = {"ratio": 3.0, "p99_first_ms": 250.0}


def make_model(folder: Path) -> Path:
    import keras

    from charlstm.data.vocab import Vocabulary
    from charlstm.training.model import ModelSpec, build_model
    from charlstm.training.saving import save_model

    keras.utils.set_random_seed(0)
    vocab = Vocabulary(VOCAB)
    model = build_model(ModelSpec(vocab_size=vocab.size))  # the default recipe's network
    path = folder / "default.keras"
    save_model(model, path, {"vocab": vocab.to_json(), "preprocessing": {}, "seeds": [PRIME]})
    return path




def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int) -> tuple[subprocess.Popen, float]:
    """The server process, and the seconds from its start until /healthz answered."""
    import urllib.request

    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm.cli", "serve", str(model), "--port", str(port), "--max-streams", "256"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the server did not start") from None
            time.sleep(0.02)


async def one_request(client, url: str, length: int, seed: int) -> tuple[float, float, int]:
    """(seconds to the first text chunk, seconds to the end, characters) of one streamed request."""
    body = {"prime": PRIME, "length": length, "temperature": 1.0, "seed": seed}
    t0 = time.perf_counter()
    first = None
    chars = 0
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"HTTP {r.status_code}")
        event = None
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "text" and first is None:
                first = time.perf_counter() - t0
            elif line.startswith("data: ") and event == "done":
                chars = json.loads(line[6:])["chars"]
    return (first if first is not None else float("nan")), time.perf_counter() - t0, chars


async def load_level(base: str, clients: int, seconds: float, length: int) -> dict:
    import httpx

    url = base + "/api/stream"
    firsts: list[float] = []
    totals: list[float] = []
    chars = 0
    errors = 0
    rejected = 0
    end = time.perf_counter() + seconds
    rng = random.Random(clients)

    async def worker(client) -> None:
        nonlocal chars, errors, rejected
        while time.perf_counter() < end:
            try:
                first, total, n = await one_request(client, url, length, rng.randrange(2**31))
            except RuntimeError as exc:
                if "429" in str(exc):
                    rejected += 1
                    await asyncio.sleep(0.1)
                else:
                    errors += 1
                continue
            except Exception:  # noqa: BLE001 - a benchmark counts failures instead of stopping
                errors += 1
                continue
            firsts.append(first)
            totals.append(total)
            chars += n

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        elapsed = time.perf_counter() - t0

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) * 1000 if values else float("nan")

    return {
        "clients": clients, "requests": len(totals), "seconds": elapsed, "rps": len(totals) / elapsed,
        "cps": chars / elapsed, "first_p50": pct(firsts, 50), "first_p99": pct(firsts, 99),
        "total_p50": pct(totals, 50), "total_p99": pct(totals, 99), "errors": errors, "rejected": rejected,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="per client count (default 60)")
    ap.add_argument("--length", type=int, default=1000, help="characters per request (default 1000)")
    ap.add_argument("--clients", default="1,8,32", help="client counts (default 1,8,32)")
    ap.add_argument("--readme", action="store_true", help=f"write the results into {README}")
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(Path(tmp))
        port = free_port()
        proc, startup = start_server(model, port)
        try:
            rss_before = rss_mb(proc.pid)
            results = []
            for clients in levels:
                r = asyncio.run(load_level(f"http://127.0.0.1:{port}", clients, args.seconds, args.length))
                r["rss"] = rss_mb(proc.pid)
                results.append(r)
                print(f"{clients:3d} clients: {r['rps']:.1f} req/s, {r['cps']:,.0f} chars/s, first chunk p50 "
                      f"{r['first_p50']:.1f} ms p99 {r['first_p99']:.1f} ms, end p50 {r['total_p50']:.0f} ms "
                      f"p99 {r['total_p99']:.0f} ms, errors {r['errors']}, 429s {r['rejected']}, "
                      f"RSS {r['rss']:.0f} MB", flush=True)
            rss_after = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    load1 = os.getloadavg()[0]

    lines = [
        "| clients | requests | requests/s | aggregate chars/s | first chunk p50 / p99 | whole request p50 / p99 "
        "| errors | 429s | server RSS after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['clients']} | {r['requests']:,} | {r['rps']:.1f} | {r['cps']:,.0f} "
            f"| {r['first_p50']:.1f} / {r['first_p99']:.1f} ms | {r['total_p50']:.0f} / {r['total_p99']:.0f} ms "
            f"| {r['errors']} | {r['rejected']} | {r['rss']:.0f} MB |"
        )
    by = {r["clients"]: r for r in results}
    checks = [(f"server start to first answer: {startup:.2f} s", True),
              (f"server RSS {rss_before:.0f} MB before, {rss_after:.0f} MB after (no growth beyond 10 %)",
               rss_after <= 1.1 * rss_before + 5)]
    if 1 in by and 32 in by:
        ratio = by[32]["cps"] / by[1]["cps"]
        checks.append((f"32 clients' aggregate chars/s >= {TARGETS['ratio']:.0f}x one client's: {ratio:.1f}x",
                       ratio >= TARGETS["ratio"]))
        checks.append((f"p99 time to first chunk under 32 clients < {TARGETS['p99_first_ms']:.0f} ms: "
                       f"{by[32]['first_p99']:.1f} ms", by[32]["first_p99"] < TARGETS["p99_first_ms"]))
    checks.append(("no errors", all(r["errors"] == 0 for r in results)))
    lines += ["", "| check | met |", "|---|---|"] + [f"| {t} | {'yes' if ok else 'NO'} |" for t, ok in checks]
    table = "\n".join(lines)
    machine = (
        f"{cpu_name()} ({os.cpu_count()} cores: the server, its batcher thread and all clients share them), "
        f"Python {platform.python_version()}, NumPy {np.__version__}; 1-minute load average {load0:.1f} before and "
        f"{load1:.1f} after"
    )
    print()
    print(table)
    print(f"\n{machine}")
    if args.readme:
        write_readme(table, machine, args)


def write_readme(table: str, machine: str, args: argparse.Namespace) -> None:
    command = "python benchmarks/bench_serve.py --readme"
    if args.seconds != 60 or args.length != 1000 or args.clients != "1,8,32":
        command += f" --seconds {args.seconds:g} --length {args.length} --clients {args.clients}"
    body = f"""{SECTION}

Command: `{command}` (run alone on the machine). `charlstm serve` on a random-weight model of the
default architecture (2 x LSTM(128), embedding 64, 60 symbols); each client streams `POST /api/stream` requests
of {args.length} characters back to back for {args.seconds:g} s, each with a new seed. Concurrent requests step
through the network together (the batcher); each keeps its own rows, settings and random stream.

{table}

Machine: {machine}.
"""
    replace_readme_section(README, SECTION, body)


if __name__ == "__main__":
    main()
