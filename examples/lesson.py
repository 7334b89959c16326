# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
# Settings. CI runs this notebook with CHARLSTM_LESSON_SMALL=1 (tests/test_notebook.py): seconds, not minutes.
import os

SMALL = os.environ.get("CHARLSTM_LESSON_SMALL") == "1"
EPOCHS = 1 if SMALL else 3  # the classic recipe (the lesson) and your own model: epochs to train
BUDGET = "8s" if SMALL else "3m"  # the default recipe: a time budget
MAX_CHARS = 20_000 if SMALL else None  # train on the first N characters only (None: the whole book)
SAMPLE_LENGTH = 40 if SMALL else 400  # characters per sample
UNITS = 16 if SMALL else 128  # the lesson's LSTM(128)
NETWORK = {"layers": 1, "units": 16} if SMALL else {}  # {}: the time budget sizes the default recipe's network

# %% [markdown]
# # Text generation with an LSTM: the lesson, with charlstm
#
# The lesson reads a book (Treasure Island), cuts it into 40-character windows moved 3 characters at a
# time, trains LSTM(128) + softmax with RMSprop(0.01) to predict the next character, and after every epoch
# prints 400 characters generated at temperatures 0.2, 0.5, 1.0 and 1.2. This notebook does exactly that
# with `charlstm`, then trains charlstm's faster default recipe for a time budget, generates, streams,
# scores the held-out text, starts the playground, and finally runs **your own Keras model** with charlstm's
# pieces. Every run writes its folder under `runs/` (metrics, loss curves, samples, checkpoints).

# %%
import time
from pathlib import Path

import charlstm

RUNS = Path("runs") / time.strftime("lesson-%Y%m%d-%H%M%S")  # a new folder each time the notebook runs
text = charlstm.lesson_text("treasure-island", max_chars=MAX_CHARS)  # the lesson's reading: lowercase, ASCII
print(f"{len(text):,} characters, {len(set(text))} distinct; a piece of it:\n")
print(text[10_000:10_400])

# %% [markdown]
# ## The lesson, exactly: the classic recipe
#
# One-hot windows (made inside the model, batch by batch), LSTM(128), Dense + softmax, RMSprop(0.01),
# batch 128. The samples after each epoch are the lesson's printout. Interrupting the kernel saves the run;
# the message says how to resume it (`charlstm.train(out=..., resume=True)`).

# %%
classic = charlstm.train(
    "treasure-island", recipe="classic", epochs=EPOCHS, units=UNITS, max_chars=MAX_CHARS,
    sample_length=SAMPLE_LENGTH, out=RUNS / "classic",
)
classic

# %% [markdown]
# ## The default recipe, for a time budget
#
# A loss at every position of 64-character sequences, embeddings, two LSTM layers, Adam with a schedule
# laid over the budget; the network's size is fitted to the budget too. The loss curves show up below
# when it ends (they are also `loss.png` in the run folder).

# %%
model = charlstm.train(
    "treasure-island", time=BUDGET, max_chars=MAX_CHARS, sample_length=SAMPLE_LENGTH,
    out=RUNS / "default", **NETWORK,
)
model

# %% [markdown]
# Both runs' curves, in bits per character against training time:

# %%
import csv

import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 4))
for name in ("classic", "default"):
    rows = list(csv.DictReader((RUNS / name / "metrics.csv").read_text().splitlines()))
    seconds = [float(r["time"]) for r in rows]
    ax.plot(seconds, [float(r["bpc"]) for r in rows], "o-", label=f"{name}: train")
    if rows and rows[0]["val_bpc"]:
        ax.plot(seconds, [float(r["val_bpc"]) for r in rows], "s--", label=f"{name}: validation")
ax.set_xlabel("training time (s)")
ax.set_ylabel("loss (bits/char)")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# ## Generation at the lesson's four temperatures
#
# Lower is more conservative, higher more adventurous: p_i ∝ exp(log p_i / T). Generation runs in NumPy
# from the model file, without TensorFlow.

# %%
prime = "the ship was "
for temperature in (0.2, 0.5, 1.0, 1.2):
    print(f"----- temperature {temperature}")
    print(prime + model.generate(prime, length=SAMPLE_LENGTH, temperature=temperature, seed=1))

# %% [markdown]
# Streaming: the text arrives in the cell as it is generated.

# %%
for piece in model.stream("the ship was ", length=3 * SAMPLE_LENGTH, temperature=0.8, top_p=0.95, seed=2):
    print(piece, end="", flush=True)

# %% [markdown]
# ## Evaluate
#
# Nats and bits per character on the book's last pages, which neither model trained on (the default
# recipe held them out for validation; the license after the story is left out).

# %%
book = charlstm.lesson_text("treasure-island", lowercase=False)
story = book[: book.find("*** END OF")]
held_out = story[-20_000:]
for name, m in (("classic", classic), ("default", model)):
    scores = m.evaluate(held_out, unknown="skip")
    print(f"{name}: {scores['nats_per_char']:.3f} nats/char = {scores['bits_per_char']:.3f} bits/char")

# %% [markdown]
# ## The playground
#
# A web page to generate from the models (sliders for temperature, top-k, top-p; the lesson view with the
# four temperatures side by side; the run view with the curves and per-epoch samples). It runs in the
# background of this kernel, on this machine only (127.0.0.1), until the last cell stops it.

# %%
import json
from urllib.request import urlopen

playground = charlstm.serve_in_background([RUNS / "default", RUNS / "classic"])
print(f"The playground is at {playground.url} : open it in a browser on this machine.")
for info in json.load(urlopen(playground.url + "api/models")):
    print(f"  {info['name']}: {info['architecture']}, vocabulary {info['vocab_size']}, recipe {info['recipe']}")

# %% [markdown]
# ## Bring your own Keras model
#
# The lesson's own code: your `Sequential`, your `compile`, your `fit`. charlstm adds three pieces:
#
# - `charlstm.lesson_windows(text)`: the windows as compact id arrays, x (n, 40) and y (n,), not the
#   lesson's one-hot arrays of the whole book; `charlstm.OneHotWindows` one-hot encodes them one batch at a
#   time for a model whose input is one-hot (as the lesson's is);
# - `charlstm.SampleText(...)`: the lesson's per-epoch samples, as a Keras callback, for any model that maps
#   id or one-hot windows to next-character probabilities or logits;
# - `charlstm.save_keras_model(model, vocab, path)`: one `.keras` file with the vocabulary, for
#   `charlstm.load` (NumPy), `charlstm generate` and `charlstm serve`.
#
# `import keras` here is the Keras that `charlstm.train` loaded above, on the backend it chose: PyTorch in
# the default install (and wherever it measured fastest), so your `LSTM` layers run on torch's fused kernel as
# charlstm's do (oneDNN on a CPU, cuDNN on a GPU). Your `compile` and `fit` are Keras' own: charlstm's lean
# training step is for its own loss only. A notebook that imports Keras *before* charlstm gets Keras' default
# backend instead, and `charlstm.train` says so once: import charlstm first (or set `KERAS_BACKEND=torch`).

# %%
import keras
from keras import layers

maxlen, step = 40, 3
x, y, vocab = charlstm.lesson_windows(text, maxlen=maxlen, step=step)
print(f"{len(x):,} windows: x {x.shape} {x.dtype} ({x.nbytes / 1e6:.1f} MB), y {y.shape}; vocabulary {vocab.size}")

lesson_model = keras.Sequential(
    [
        keras.Input(shape=(maxlen, vocab.size)),
        layers.LSTM(UNITS),
        layers.Dense(vocab.size, activation="softmax"),
    ]
)
lesson_model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.RMSprop(learning_rate=0.01))
lesson_model.summary()
print(f"Keras backend: {keras.backend.backend()}")

# %%
samples = charlstm.SampleText(vocab, text=text, temperatures=[0.2, 0.5, 1.0, 1.2], length=SAMPLE_LENGTH)
history = lesson_model.fit(
    charlstm.OneHotWindows(x, y, vocab.size, batch_size=128, one_hot_targets=True),
    epochs=EPOCHS,
    callbacks=[samples],
)

# %%
path = charlstm.save_keras_model(
    lesson_model, vocab, RUNS / "keras" / "lesson.keras", text=text, lowercase=True, name="treasure-island"
)
mine = charlstm.load(path)  # the NumPy runtime: no TensorFlow needed from here on
print(mine)
print("the ship was " + mine.generate("the ship was ", length=SAMPLE_LENGTH, temperature=0.5, seed=1))
print(f"\nFrom a terminal: charlstm generate {path} --temperature 0.2,0.5,1.0,1.2   or   charlstm serve {path}")

# %%
playground.stop()  # the playground server ends here
