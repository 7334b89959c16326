"""The "before" models of the repeats benchmark: the default recipe as it was before time budgets (epochs)."""
import shutil

from common import OUT, seed_keras_cache

import charlstm

seed_keras_cache()
for name, source, settings in [
    ("before-stdlib", "python-stdlib", dict(epochs=5, max_chars=1_000_000)),
    ("before-ti", "treasure-island", dict(lowercase=True, ascii_only=True, normalize="none", strip_gutenberg=True)),
]:
    shutil.rmtree(OUT / name, ignore_errors=True)
    charlstm.train(source, out=OUT / name, verbose=0, sample_length=0, lr_schedule="cosine", **settings)
