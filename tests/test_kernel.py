"""train() as a notebook runs it: a kernel's interrupt (KeyboardInterrupt delivered to the main thread) saves
and says how to resume; the model's repr says what it is; errors show as one line in IPython."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

import charlstm
from charlstm.errors import CharlstmError, TrainingInterrupted

pytestmark = pytest.mark.slow


def test_kernel_interrupt_during_train_leaves_a_resumable_run(tiny_corpus, tmp_path) -> None:
    import keras

    class InterruptLikeAKernel(keras.callbacks.Callback):
        """At the third batch, another thread interrupts the main thread, as Jupyter's Interrupt does."""

        def __init__(self) -> None:
            super().__init__()
            self.sent = False

        def on_train_batch_end(self, batch: int, logs=None) -> None:
            if batch == 2 and not self.sent:
                self.sent = True
                threading.Timer(0.0, _thread.interrupt_main).start()
                time.sleep(0.3)  # the interrupt lands in the main thread while it is training

    out = tmp_path / "run"
    settings = dict(layers=1, units=16, seq_len=16, batch_size=8, sample_length=10, sample_temperatures=[0.5])
    with pytest.raises(TrainingInterrupted) as caught:
        charlstm.train(str(tiny_corpus), out=out, epochs=2, verbose=0, callbacks=[InterruptLikeAKernel()], **settings)
    message = str(caught.value)
    assert f"charlstm.train(out={str(out)!r}, resume=True)" in message  # the Python call to continue
    assert f"charlstm train --resume {out}" in message  # and the CLI's
    assert (out / "last.keras").is_file()
    model = charlstm.train(out=out, resume=True, verbose=0)
    epochs = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2"]  # the interrupted first epoch was redone, then the second trained
    shown = repr(model)
    assert "LSTM(16)" in shown and f"vocabulary {model.vocab.size}" in shown and "recipe 'default'" in shown
    assert f"best validation {model.best_val_bpc:.3f} bits/char" in shown


def test_charlstm_errors_show_as_one_line_in_ipython() -> None:
    assert CharlstmError("x.txt: no such file")._render_traceback_() == ["CharlstmError: x.txt: no such file"]


def test_interrupting_a_jupyter_kernel_during_train_saves_and_says_how_to_resume(tiny_corpus, tmp_path, monkeypatch) -> None:
    """The real thing: Jupyter's Interrupt (KernelManager.interrupt_kernel, SIGINT to the kernel process)
    while a cell trains; the cell ends with charlstm's one-line interruption, and the run resumes."""
    jupyter_client = pytest.importorskip("jupyter_client")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))  # this venv's python3 kernel
    out = tmp_path / "run"
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        code = (
            "import charlstm\n"
            f"charlstm.train({str(tiny_corpus)!r}, out={str(out)!r}, epochs=500, layers=1, units=16, seq_len=16,"
            " batch_size=8, sample_length=10, sample_temperatures=[0.5], verbose=0)\n"
        )
        msg_id = kc.execute(code)
        deadline = time.monotonic() + 120
        while not (out / "metrics.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (out / "metrics.csv").exists(), "no epoch finished in 120 s"
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=120)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=120)
        content = reply["content"]
        assert content["status"] == "error" and content["ename"] == "TrainingInterrupted", content
        assert content["traceback"] == [f"TrainingInterrupted: {content['evalue']}"]  # one line, no traceback
        assert f"charlstm.train(out={str(out)!r}, resume=True)" in content["evalue"]
        done = int(content["evalue"].split(" epoch ")[1].split(";")[0])
        reply = kc.execute_interactive(
            f"m = charlstm.train(out={str(out)!r}, resume=True, epochs={done + 1}, verbose=0)", timeout=120
        )
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
