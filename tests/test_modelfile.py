"""The single .keras file: save -> load in a fresh process is exact, Keras loads it in safe mode, writes are
atomic, and anything that is not a charlstm model is refused with a readable error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import charlstm
from charlstm.errors import CharlstmError
from charlstm.fileio import save_atomic, write_atomic
from charlstm.generation.modelfile import META_ENTRY
from charlstm.training.saving import FORMAT_VERSION, load_keras_model, read_meta, save_model

PRIME = "the dog sat on "


def run_python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def resaved(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_run's model loaded into Keras and written again by modelfile.save_model."""
    path = tmp_path_factory.mktemp("resaved") / "again.keras"
    meta = read_meta(tiny_run / "model.keras")
    save_model(load_keras_model(tiny_run / "model.keras"), path, {k: v for k, v in meta.items() if k != "format"})
    return path


def test_saved_file_is_keras_zip_plus_charlstm_entry(resaved, tiny_run):
    with zipfile.ZipFile(resaved) as z:
        names = set(z.namelist())
        meta = json.loads(z.read(META_ENTRY))
    assert {"config.json", "metadata.json", "model.weights.h5", META_ENTRY} <= names
    assert meta["format"] == "charlstm-model" and meta["format_version"] == FORMAT_VERSION
    original = read_meta(tiny_run / "model.keras")
    assert meta["vocab"] == original["vocab"] and meta["seeds"] == original["seeds"]


def test_save_then_load_in_a_new_process_is_exact(resaved, tiny_run, tmp_path):
    here = charlstm.load(str(tiny_run / "model.keras"))
    logits = here.logits(PRIME)
    text = here.generate(PRIME, 200, temperature=0.8, seed=11)
    batch = here.generate(PRIME, 50, temperature=1.0, seed=12, num_samples=3)
    out = tmp_path / "fresh.npz"
    run_python(f"""
        import json, sys, numpy as np, charlstm
        m = charlstm.load({str(resaved)!r})
        np.savez({str(out)!r}, logits=m.logits({PRIME!r}),
                 text=m.generate({PRIME!r}, 200, temperature=0.8, seed=11),
                 batch=np.array(m.generate({PRIME!r}, 50, temperature=1.0, seed=12, num_samples=3)),
                 tf=np.array("tensorflow" in sys.modules))
    """)
    fresh = np.load(out)
    np.testing.assert_array_equal(fresh["logits"], logits)  # bit for bit
    assert str(fresh["text"]) == text
    assert fresh["batch"].tolist() == batch
    assert not bool(fresh["tf"])  # the runtime never needs TensorFlow


def test_runtime_save_writes_the_same_file(tiny_run, tmp_path):
    model = charlstm.load(str(tiny_run / "model.keras"))
    model.save(tmp_path / "copy.keras")
    assert (tmp_path / "copy.keras").read_bytes() == (tiny_run / "model.keras").read_bytes()


def test_keras_load_model_in_safe_mode_in_a_fresh_process(tiny_run, tmp_path):
    """Plain `keras.saving.load_model(path)`: no custom objects, no charlstm import, same logits."""
    runtime = charlstm.load(str(tiny_run / "model.keras"))
    ids = np.stack([runtime.encode(PRIME), runtime.encode("a cat met a dog")[: len(PRIME)]]).astype("int32")
    np.save(tmp_path / "ids.npy", ids)
    out = tmp_path / "keras_logits.npy"
    run_python(f"""
        import sys, numpy as np, keras
        model = keras.saving.load_model({str(tiny_run / "model.keras")!r})
        assert not any(name.startswith("charlstm") for name in sys.modules), "charlstm was imported"
        np.save({str(out)!r}, model.predict(np.load({str(tmp_path / "ids.npy")!r}), verbose=0))
    """)
    keras_logits = np.load(out)
    ours, _ = runtime.forward(ids)
    assert keras_logits.shape == ours.shape == (2, len(PRIME), runtime.vocab.size)
    np.testing.assert_allclose(keras_logits, ours, rtol=1e-4, atol=1e-4)
    assert np.array_equal(keras_logits.argmax(-1), ours.argmax(-1))


# -- atomic writes --------------------------------------------------------------------------------


def test_write_atomic_replaces_whole_files(tmp_path):
    target = tmp_path / "model.keras"
    write_atomic(target, b"old" * 1000)
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["model.keras"]


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_atomic_files_get_ordinary_permissions(tmp_path, tiny_run):
    """Not the private 0600 of a temporary file: a web server or a colleague can read the run."""
    ordinary = 0o666 & ~current_umask()
    write_atomic(tmp_path / "new.txt", "x")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == ordinary
    for name in ("model.keras", "last.keras", "metrics.csv", "loss.png", "config.json"):
        assert (tiny_run / name).stat().st_mode & 0o777 == ordinary, name
    (tmp_path / "new.txt").chmod(0o640)  # a replaced file keeps the mode it had
    write_atomic(tmp_path / "new.txt", "y")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640


def test_failed_writer_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "model.keras"
    write_atomic(target, b"complete old model")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(b"trunc")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic(target, half_then_crash)
    assert target.read_bytes() == b"complete old model"
    assert os.listdir(tmp_path) == ["model.keras"]  # the partial temp file is gone too


def test_failed_model_save_keeps_the_previous_model(tiny_run, tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes((tiny_run / "model.keras").read_bytes())

    class Crashing:
        def save(self, path):
            Path(path).write_bytes(b"PK\x03\x04 half a zip")
            raise KeyboardInterrupt  # Ctrl-C in the middle of model.save

    with pytest.raises(KeyboardInterrupt):
        save_model(Crashing(), target, {"vocab": {}})
    assert target.read_bytes() == (tiny_run / "model.keras").read_bytes()
    assert charlstm.load(str(target)).vocab.size > 0


def test_writer_killed_midway_never_truncates_the_target(tmp_path):
    """SIGKILL while the new file is half written: the target is still the complete old file."""
    target = tmp_path / "model.keras"
    write_atomic(target, b"old complete file")
    flag = tmp_path / "half-written"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from charlstm.fileio import save_atomic
        def slow(tmp):
            tmp.write_bytes(b"new but only half")
            Path({str(flag)!r}).touch()
            time.sleep(60)
        save_atomic({str(target)!r}, slow)
    """)])
    try:
        deadline = time.monotonic() + 30
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert flag.exists()
        assert target.read_bytes() == b"old complete file"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert target.read_bytes() == b"old complete file"


# -- files that are not charlstm models -----------------------------------------------------------


def _not_models(tmp_path: Path, tiny_run: Path) -> dict[str, Path]:
    files = {}
    files["text"] = tmp_path / "notes.keras"
    files["text"].write_text("just some text\n", encoding="utf-8")
    files["zip"] = tmp_path / "random.keras"
    with zipfile.ZipFile(files["zip"], "w") as z:
        z.writestr("hello.txt", "hi")
        z.writestr("data.bin", os.urandom(256))
    files["truncated"] = tmp_path / "truncated.keras"
    data = (tiny_run / "model.keras").read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["keras_only"] = tmp_path / "plain.keras"  # a Keras model file without charlstm.json
    with zipfile.ZipFile(tiny_run / "model.keras") as src, zipfile.ZipFile(files["keras_only"], "w") as dst:
        for name in src.namelist():
            if name != META_ENTRY:
                dst.writestr(name, src.read(name))
    files["empty"] = tmp_path / "empty.keras"
    files["empty"].write_bytes(b"")
    damaged = {  # the right zip entries with damaged or foreign contents
        "bad_weights": {"model.weights.h5": b"garbage"},
        "bad_graph": {"config.json": b'{"a": 1}'},
        "meta_not_object": {META_ENTRY: b"[1, 2]"},
        "meta_without_vocab": {META_ENTRY: b'{"format": "charlstm-model"}'},
    }
    for kind, replace in damaged.items():
        files[kind] = tmp_path / f"{kind}.keras"
        with zipfile.ZipFile(tiny_run / "model.keras") as src, zipfile.ZipFile(files[kind], "w") as dst:
            for name in src.namelist():
                dst.writestr(name, replace.get(name, src.read(name)))
    return files


def test_non_models_are_refused_by_name(tiny_run, tmp_path):
    for kind, path in _not_models(tmp_path, tiny_run).items():
        with pytest.raises(CharlstmError) as info:
            charlstm.load(str(path))
        assert str(path) in str(info.value) and "not a charlstm model" in str(info.value), kind
        if kind != "meta_without_vocab":  # (its Keras part is intact)
            with pytest.raises(CharlstmError):
                load_keras_model(path)
    with pytest.raises(CharlstmError, match="no such model file"):
        charlstm.load(str(tmp_path / "missing.keras"))
