"""Clean output: TensorFlow's and absl's start-up lines reach the terminal only with -v; what matters is said
in charlstm's words."""

from __future__ import annotations

import os

from conftest import run_cli

from charlstm.cli import build_parser
from charlstm.cli.train import _train_settings
from charlstm.training import engines

ENGINE_LINES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796117183.796353    4904 port.cc:153] oneDNN custom operations are on.\n"
    b"E0000 00:00:1796117186.982381    4904 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
)


def test_quiet_training_writes_nothing_to_stderr(tiny_corpus, tmp_path) -> None:
    out = tmp_path / "run"
    r = run_cli(
        "train", str(tiny_corpus), "--out", str(out), "--epochs", "1", "--layers", "1", "--units", "16",
        "--seq-len", "16", "--quiet",
        env={"TF_CPP_MIN_LOG_LEVEL": None},  # as a user's shell has it: unset
    )
    assert r.returncode == 0, r.stderr
    assert (out / "model.keras").is_file()
    if engines.gpu_hardware() is None:
        assert r.stderr == ""
    else:  # a GPU machine may hear charlstm's own warning about it, nothing else
        assert all(line.startswith("charlstm: ") for line in r.stderr.splitlines()), r.stderr


def test_engine_lines_are_dropped_and_everything_else_kept(capfd) -> None:
    with engines.native_stderr_filtered():
        os.write(2, ENGINE_LINES + b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"


def test_verbose_lets_the_engines_lines_through(capfd) -> None:
    """-v (verbose=2) reaches load_engines(show_logs=True), which filters nothing."""
    assert _train_settings(build_parser().parse_args(["train", "x.txt", "-v"]))["verbose"] == 2
    assert _train_settings(build_parser().parse_args(["train", "x.txt", "--quiet"]))["verbose"] == 0
    with engines.native_stderr_filtered(show=True):
        os.write(2, ENGINE_LINES)
    assert capfd.readouterr().err == ENGINE_LINES.decode()


def test_an_unused_gpu_is_said_in_charlstms_words() -> None:
    assert engines.unused_gpu_message("tensorflow", "cpu", None) is None
    assert engines.unused_gpu_message("tensorflow", "gpu", "/dev/nvidia0") is None
    message = engines.unused_gpu_message("tensorflow", "cpu", "/dev/nvidia0")
    assert message.startswith("charlstm: warning: this machine has an NVIDIA GPU (/dev/nvidia0)")
    assert "tensorflow[and-cuda]" in message and "training on the CPU" in message
