"""Issue 21: the torch engine's GPU code paths, as far as a CPU allows (benchmarks/bench_gpu.py measures them on a
GPU): device selection follows Keras' torch device, the fused-LSTM hook is installed for CUDA too and leaves
devices it cannot take to Keras, 16-bit settings on a GPU, the warning for a GPU that torch cannot use.

The pytest process runs Keras on TensorFlow, so the torch parts run in one subprocess, with torch's CUDA
queries monkeypatched to say a GPU is there.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_backends import _env

from charlstm.errors import CharlstmError
from charlstm.training import engines, torch_engine

pytest.importorskip("torch")

GPU = r"""
import io, json, sys, contextlib
import keras, torch
import keras.src.backend.torch.core as core
from charlstm.training import device, engines, torch_engine, torch_lstm
from charlstm.training.model import ModelSpec, build_model, compile_model
from charlstm.training.recipes import make_config

out = {"cpu": [torch_engine.training_device(), device.device()["kind"]]}
config = make_config("default", dropout=0.0)
model = build_model(ModelSpec(20, embedding_dim=8, units=16))
compile_model(model, config, 3)

# a CPU-only torch on a machine with an NVIDIA GPU: training on the CPU, and the warning says how to use it
engines.gpu_hardware = lambda: "/dev/nvidia0"
err = io.StringIO()
with contextlib.redirect_stderr(err):
    engines.warn_unused_gpu("torch")
out["warning"] = err.getvalue()

# the hook's gate: a device torch's fused kernel does not cover (here "meta") goes to Keras' own function
torch_lstm.install()
stock, torch_lstm._stock = torch_lstm._stock, lambda *a, **k: "stock"
core_convert, core.convert_to_tensor = core.convert_to_tensor, lambda x, dtype=None: x
meta = lambda *shape: torch.empty(*shape, device="meta")
out["meta"] = torch_lstm.fused_lstm(meta(2, 3, 4), meta(2, 5), meta(2, 5), None, meta(4, 20), meta(5, 20), meta(20),
                                    keras.activations.tanh, keras.activations.sigmoid, return_sequences=True)
torch_lstm._stock, core.convert_to_tensor = stock, core_convert
torch_lstm.uninstall()

# torch sees a GPU: Keras' torch backend would put every tensor there (its device, KERAS_TORCH_DEVICE or cuda)
core.get_device = lambda: "cuda"
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 1
torch.cuda.get_device_name = lambda index=0: "NVIDIA Test GPU"
torch.cuda.is_initialized = lambda: False
out["gpu"] = [torch_engine.training_device(), device.device()]
switched = torch_engine.prepare(model)
out["gpu_prepare"] = switched
out["gpu_hook"] = torch_lstm.installed()
torch_engine.seed_torch(1, 2, 3)  # CUDA not initialised yet: seeds the CPU generator only, without error
for precision in ("bf16", "fp16"):
    torch_engine.check_precision(precision, "cuda")
out["describe"] = torch_engine.describe()["torch_device"]
err = io.StringIO()
with contextlib.redirect_stderr(err):
    engines.warn_unused_gpu("torch")
out["gpu_warning"] = err.getvalue()
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def gpu() -> dict:
    proc = subprocess.run([sys.executable, "-c", GPU], capture_output=True, text=True, timeout=300,
                          env=_env(KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


def test_without_a_gpu_torch_trains_on_the_cpu(gpu):
    assert gpu["cpu"] == ["cpu", "cpu"]


def test_a_gpu_torch_cannot_use_is_one_warning_that_says_how(gpu):
    line = gpu["warning"].strip()
    assert line.startswith("charlstm: warning: this machine has an NVIDIA GPU (/dev/nvidia0) but torch cannot use it")
    assert 'pip install --force-reinstall "torch==2.13.0"' in line and "\n" not in line


def test_the_hook_leaves_devices_it_cannot_take_to_keras(gpu):
    assert gpu["meta"] == "stock"


def test_a_gpu_torch_sees_is_where_training_runs_with_the_fused_hook(gpu):
    assert gpu["gpu"] == ["cuda", {"kind": "gpu", "count": 1, "name": "NVIDIA Test GPU"}]
    assert gpu["gpu_prepare"]["fused_lstm"] and gpu["gpu_prepare"]["lean_step"] and gpu["gpu_hook"] is True
    assert gpu["describe"] == "cuda"
    assert gpu["gpu_warning"] == ""  # the GPU is used: nothing to warn about


def test_16_bit_settings_on_a_gpu_and_on_a_cpu():
    torch_engine.check_precision("fp16", "cuda")  # float16 with Keras' loss scaling on a GPU
    torch_engine.check_precision(None, "cpu")
    with pytest.raises(CharlstmError, match="fp16 on the torch backend on a CPU is not supported"):
        torch_engine.check_precision("fp16", "cpu")


def test_the_unused_gpu_message_names_each_backends_fix():
    assert engines.unused_gpu_message("torch", "gpu", "/dev/nvidia0") is None
    assert engines.unused_gpu_message("torch", "cpu", None) is None
    assert "tensorflow[and-cuda]" in engines.unused_gpu_message("tensorflow", "cpu", "/dev/nvidia0")
    assert "jax[cuda12]" in engines.unused_gpu_message("jax", "cpu", "/dev/nvidia0")
