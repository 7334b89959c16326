"""Helpers for the server tests: small model files, and a real `charlstm serve` process on a free loopback port
(bounded waits; stopped with SIGINT, then killed if it lingers). Imported by the test modules; not collected."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from model_factory import CHARS, build_and_save

WIDE_CHARS = (*CHARS, "中", "文", "😀", "𠀋", "é")  # CJK, an emoji and a CJK Ext. B character (astral)


def make_model(path: Path, **kw) -> Path:
    """A small random-weight model (2 x LSTM(32)) with a default prime; fast enough for any test."""
    defaults = dict(layers=2, units=32, logit_scale=2.0, seed=3, extra_meta={"seeds": ["the cat "]})
    build_and_save(path, **{**defaults, **kw})
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0, token: str | None = None) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


@contextmanager
def live_server(models: Sequence[str], *args: str, startup_s: float = 30.0) -> Iterator[str]:
    """`charlstm serve MODELS --port P ...` in a subprocess; yields its base URL once /healthz answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "charlstm.cli", "serve", *models, "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"charlstm serve exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                get_json(base + "/healthz", timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"charlstm serve did not answer within {startup_s} s") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        print(f"--- charlstm serve output ---\n{proc.stdout.read()}")  # shown by pytest when a test failed
        proc.stdout.close()
