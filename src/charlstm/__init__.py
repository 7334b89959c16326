"""charlstm: character-level LSTM language models — train on any text, generate fast.

`import charlstm` is light: Keras and its engine load only when training starts (`charlstm.train`), so
loading a model and generating (`charlstm.load(path).generate(...)`) needs NumPy and h5py alone. Imported
before Keras, it names the fast engine (PyTorch) as Keras' backend for a later `import keras` in the same
process (`training.backend.preset`; KERAS_BACKEND, when set, wins).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charlstm.errors import CharlstmError
from charlstm.training.backend import preset as _preset_backend

_preset_backend()

__version__ = "0.1.0"
__all__ = ["CharlstmError", "train", "prepare", "load", "CharModel", "__version__"]

# the lesson's own Keras code with charlstm's pieces (examples/lesson.ipynb): name -> module, imported on use
_LESSON = {
    "lesson_text": "charlstm.data.lesson",
    "lesson_windows": "charlstm.data.lesson",
    "OneHotWindows": "charlstm.training.lesson",  # these three import Keras
    "SampleText": "charlstm.training.lesson",
    "save_keras_model": "charlstm.training.lesson",
    "serve_in_background": "charlstm.server.run",
    # take a model anywhere (charlstm export): an ONNX step graph, a static web page
    "export_onnx": "charlstm.export.onnx",
    "export_web": "charlstm.export.web",
}
__all__ += list(_LESSON)

if TYPE_CHECKING:
    from charlstm.generation.model import CharModel


def load(path: str) -> CharModel:
    """Load a charlstm `.keras` model file for generation (NumPy runtime, no TensorFlow)."""
    from charlstm.generation.model import load as _load

    return _load(path)


def __getattr__(name: str) -> Any:
    if name == "train":
        from charlstm.training.trainer import train

        return train
    if name == "prepare":
        from charlstm.data.prepare import prepare

        return prepare
    if name == "CharModel":
        from charlstm.generation.model import CharModel

        return CharModel
    if name in _LESSON:
        import importlib

        return getattr(importlib.import_module(_LESSON[name]), name)
    raise AttributeError(f"module 'charlstm' has no attribute {name!r}")
