"""charlstm: character-level LSTM language models — train on any text, generate fast.

`import charlstm` is light: Keras/TensorFlow load only when training starts (`charlstm.train`), so loading
a model and generating (`charlstm.load(path).generate(...)`) needs NumPy and h5py alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charlstm.errors import CharlstmError

__version__ = "0.1.0"
__all__ = ["CharlstmError", "train", "prepare", "load", "CharModel", "__version__"]

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
    raise AttributeError(f"module 'charlstm' has no attribute {name!r}")
