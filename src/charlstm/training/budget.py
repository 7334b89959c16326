"""Training for a time budget: `--time 10m` instead of `--epochs N`.

Three pieces, all plain Python (no Keras here: the Keras glue is `budget_clock.BudgetClock`):

- `parse_duration`: "90s", "10m", "1h30m" -> seconds, with a clear error for anything else;
- `choose_size`: the network for the budget, from a few timed steps of candidate sizes and the corpus size
  (the rule and the measurements it was fitted on: benchmarks/README.md, "Training for a time budget");
- `BudgetSchedule`: where a budgeted run stands. It measures steps per second as the run goes (over a
  recent window, so a machine that slows down or speeds up is followed), sets the total step count so that
  the learning-rate schedule ends when the budget does, and says when to stop so that the final validation
  and the checkpoints still fit in the budget.

The schedule is laid over progress p = steps done / steps the budget will allow (re-estimated at every step,
never moving backwards). "wsd" (warmup-stable-decay) holds the peak rate until p = 0.8 and decays it to zero
over the last 20 % with a 1 - sqrt shape; "cosine" decays from the end of the warm-up on. Which one is the
default is a measurement (benchmarks/README.md).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from charlstm.errors import CharlstmError

SHAPES = ("wsd", "cosine", "constant")
DEFAULT_SHAPE = "wsd"  # the default recipe's shape under --time (benchmarks/README.md: wsd vs cosine)
WARMUP = 0.02  # share of the budget's steps spent warming up (from 10 % of the peak rate, or the current rate)
DECAY = 0.2  # wsd: share of the steps over which the rate decays to zero

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|m|s)")


def parse_duration(value: str | float | int) -> float:
    """Seconds in "90s", "10m", "1h30m", "1.5h", "2m30s" or a plain number of seconds ("600", 600)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            pieces = _DURATION.findall(text)
            units = [unit for _, unit in pieces]
            if (
                not pieces
                or _DURATION.sub("", text).strip()
                or len(set(units)) != len(units)
                or units != sorted(units, key="hms".index)
            ):
                raise CharlstmError(
                    f"--time expects a duration such as 90s, 10m or 1h30m (or plain seconds), got {value!r}"
                ) from None
            seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in pieces)
    if not math.isfinite(seconds) or seconds <= 0:
        raise CharlstmError(f"--time must be a positive duration, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """1:30, 10:00, 1:30:00 — how the progress line and messages show a budget."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# -- the learning-rate shape ----------------------------------------------------------------------------
def lr_factor(shape: str, progress: float, start: float = 0.1, warmup: float = WARMUP, decay: float = DECAY) -> float:
    """The learning rate at `progress` in [0, 1], as a fraction of the peak; `start` is where warm-up begins."""
    if shape not in SHAPES:
        raise CharlstmError(f"a time budget lays out wsd, cosine or constant learning rates, not {shape!r}")
    p = min(max(progress, 0.0), 1.0)
    if shape == "constant":
        return 1.0
    if p < warmup:
        return start + (1.0 - start) * p / warmup
    if shape == "wsd":
        if p < 1.0 - decay:
            return 1.0
        return 0.0 if p >= 1.0 else 1.0 - math.sqrt((p - (1.0 - decay)) / decay)
    return 0.5 * (1.0 + math.cos(math.pi * (p - warmup) / (1.0 - warmup)))  # cosine


# -- progress through the budget ------------------------------------------------------------------------
class BudgetSchedule:
    """The clock, the step-rate estimate and the learning rate of one budgeted segment of a run.

    A segment is what one `--time` bought: `seconds` in all, `spent` of them by earlier sessions (a run
    interrupted with Ctrl-C resumes its segment; `--resume --time` starts a new one). Times come from the
    caller (`now`), so tests can drive it with a simulated clock.
    """

    def __init__(
        self,
        seconds: float,
        peak_lr: float,
        shape: str = "wsd",
        *,
        spent: float = 0.0,
        steps_done: int = 0,
        progress: float = 0.0,
        start_lr: float | None = None,
        rate: float | None = None,
        reserve: float = 1.0,
    ) -> None:
        lr_factor(shape, 0.0)  # reject an unknown shape now
        self.seconds = float(seconds)
        self.peak_lr = float(peak_lr)
        self.shape = shape
        self.spent = float(spent)
        self.steps_done = int(steps_done)
        self.progress = float(progress)
        self.start_lr = float(start_lr) if start_lr is not None else 0.1 * self.peak_lr
        self.rate = rate  # steps per second: the probe's figure until the run has measured its own
        self.reserve = float(reserve)  # seconds kept back for the final validation and checkpoint
        self._t0: float | None = None
        self._spent0 = self.spent
        self._marks: deque[tuple[float, int]] = deque()
        self._overheads: list[float] = []
        self.decay_started_at: float | None = None  # elapsed seconds when the rate first left the peak

    # time
    @property
    def running(self) -> bool:
        return self._t0 is not None

    def start(self, now: float) -> None:
        """The session's clock starts (a resumed segment goes on from `spent`)."""
        self._t0 = now
        self._spent0 = self.spent
        self._marks.clear()

    def elapsed(self, now: float) -> float:
        return self._spent0 + (now - self._t0 if self._t0 is not None else 0.0)

    def remaining(self, now: float) -> float:
        return self.seconds - self.elapsed(now)

    def should_stop(self, now: float) -> bool:
        """True once what is left would only cover the final validation and checkpoint."""
        return self.remaining(now) <= self.reserve

    def note_overhead(self, seconds: float) -> None:
        """An epoch end (validation, samples, checkpoints) took this long: keep enough back for the last one.

        The first measurement replaces the trainer's estimate; later ones can only raise the reserve.
        """
        self._overheads.append(seconds)
        self.reserve = 1.5 * max(self._overheads)

    # rate and progress
    def measured_rate(self, now: float) -> float | None:
        """Steps per wall second over the last tenth of the budget (at least 5 s), pauses included; until
        this session has timed enough of its own steps (a second, or 50 steps), the estimate it was given."""
        rate, _ = self._rate(now)
        return rate

    def _rate(self, now: float) -> tuple[float | None, bool]:
        if not self._marks:
            return self.rate, False
        t_old, s_old = self._marks[0]
        if now - t_old < 1.0 and (now - t_old < 0.2 or self.steps_done - s_old < 50):
            return self.rate, False  # too little of its own to go by yet
        return (self.steps_done - s_old) / (now - t_old), True

    def _mark(self, now: float) -> None:
        window = max(5.0, 0.1 * self.seconds)
        if not self._marks or now - self._marks[-1][0] >= window / 50:
            self._marks.append((now, self.steps_done))
        while len(self._marks) > 2 and now - self._marks[1][0] >= window:
            self._marks.popleft()

    def step(self, now: float) -> float:
        """One optimizer step finished at `now`: update the progress; return the learning rate for the next.

        Progress = steps done / (steps done + measured rate x seconds left). It may move back while the rate
        is still at its peak (a first estimate that was too low), never once the decay has begun; and until
        the session has measured its own speed it goes no further than the share of the time used.
        """
        self.steps_done += 1
        self._mark(now)
        rate, measured = self._rate(now)
        left = max(0.0, self.remaining(now) - self.reserve)
        p = self.steps_done / (self.steps_done + rate * left) if rate else self.progress
        if not measured:
            p = min(p, max(self.progress, self.elapsed(now) / self.seconds))
        if self.progress >= 1.0 - DECAY:
            p = max(p, self.progress)
        self.progress = 1.0 if left <= 0.0 else min(1.0, p)  # the time is up: the schedule has ended
        lr = self.lr()
        if self.decay_started_at is None and self.shape != "constant" and self.progress > WARMUP and lr < self.peak_lr * 0.999:
            self.decay_started_at = self.elapsed(now)
        return lr

    def lr(self) -> float:
        return self.peak_lr * lr_factor(self.shape, self.progress, self.start_lr / self.peak_lr)

    def state(self, now: float) -> dict[str, Any]:
        """What last.keras records, so that an interrupted segment resumes where it stood."""
        return {
            "seconds": self.seconds,
            "spent": round(self.elapsed(now), 3),
            "steps_done": self.steps_done,
            "progress": self.progress,
            "start_lr": self.start_lr,
            "peak_lr": self.peak_lr,
            "shape": self.shape,
            "steps_per_second": self.measured_rate(now),
        }


# -- the size rule --------------------------------------------------------------------------------------
# (layers, units) tried from small to large; two layers throughout (see benchmarks/README.md)
CANDIDATES: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (2, 256), (2, 384), (2, 512))
CHARS_PER_PARAM = 4.0  # a candidate must see 4 x (1 + 1 / passes over the text) characters per parameter
USABLE = 0.85  # share of the budget that is training steps (probe, compile, validation take the rest)


def lstm_params(layers: int, units: int, vocab: int, embedding_dim: int) -> int:
    """Parameters of Embedding + `layers` x LSTM(units) + Dense(vocab)."""
    total, width = vocab * embedding_dim, embedding_dim
    for _ in range(layers):
        total += 4 * units * (width + units + 1)
        width = units
    return total + units * vocab + vocab


def wanted_chars(params: int, train_chars: int, planned: float) -> float:
    """Characters a network of `params` must see in the budget to be worth its size (fitted: see CANDIDATES).

    4 per parameter when the text is read many times over; more when it is read about once, since a smaller
    network is then not yet repeating its text either (python-stdlib, 150 s: 2 x 128 beat 2 x 256 at 4.2 per
    parameter, while on a book read 11 times the two tied at 4.1).
    """
    passes = planned / max(1, train_chars)
    return CHARS_PER_PARAM * params * (1.0 + 1.0 / max(passes, 1e-9))


def dropout_for(params: int, train_chars: int, passes: float) -> float:
    """Dropout for `params` parameters reading `train_chars` characters `passes` times within the budget.

    More capacity per training character overfits sooner (char-rnn's advice): 0.2 + 0.1 * log2(params per
    character), between 0 and 0.5, in steps of 0.05; none when the budget cannot read the text twice.
    """
    if passes < 2.0:
        return 0.0
    d = 0.2 + 0.1 * math.log2(params / max(1, train_chars))
    return round(round(min(0.5, max(0.0, d)) / 0.05) * 0.05, 2)


@dataclass
class Sizing:
    """The network the budget buys, and why (printed in one line and recorded in config.json)."""

    layers: int
    units: int
    dropout: float
    why: str
    chars_per_second: dict[str, float] = field(default_factory=dict)  # measured, per candidate probed
    planned_chars: float = 0.0  # target characters the chosen size will see in the budget
    planned_epochs: float = 0.0
    explicit: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def choose_size(
    seconds: float,
    train_chars: int,
    vocab: int,
    embedding_dim: int,
    measure: Callable[[int, int], float],
    explicit: dict[str, Any] | None = None,
) -> Sizing:
    """The largest candidate that can see enough characters per parameter within the budget (`wanted_chars`).

    `measure(layers, units)` returns target characters per second from a few timed training steps. Probes go
    from small to large and stop at the first size that cannot qualify (a larger network is never faster),
    so a short budget times one or two sizes. `explicit` holds the user's own layers/units/dropout: they always
    win, and the rule fills in only what was not given.
    """
    explicit = {k: v for k, v in (explicit or {}).items() if v is not None}
    usable = USABLE * seconds
    rates: dict[str, float] = {}
    if "layers" in explicit and "units" in explicit:
        pool = [(int(explicit["layers"]), int(explicit["units"]))]
    else:
        pool = [
            c
            for c in CANDIDATES
            if ("layers" not in explicit or c[0] == explicit["layers"])
            and ("units" not in explicit or c[1] == explicit["units"])
        ] or [(int(explicit.get("layers", 2)), int(explicit.get("units", 128)))]
    chosen = None
    rejected = ""
    for layers, units in pool:
        params = lstm_params(layers, units, vocab, embedding_dim)
        best_rate = max(rates.values(), default=math.inf)
        if chosen is not None and best_rate * usable < wanted_chars(params, train_chars, best_rate * usable):
            rejected = f"{layers}x{units} could see at most {best_rate * usable / params:.1f} per parameter"
            break  # cannot qualify even at the speed of a smaller network
        rate = measure(layers, units)
        rates[f"{layers}x{units}"] = round(rate, 1)
        wanted = wanted_chars(params, train_chars, rate * usable)
        if chosen is None or rate * usable >= wanted:
            chosen = (layers, units, rate, params)
        else:
            rejected = f"{layers}x{units} would see {rate * usable / params:.1f} per parameter, wants {wanted / params:.1f}"
            break
    assert chosen is not None
    layers, units, rate, params = chosen
    planned = rate * usable
    epochs = planned / max(1, train_chars)
    dropout = float(explicit["dropout"]) if "dropout" in explicit else dropout_for(params, train_chars, epochs)
    given = sorted(explicit)
    why = (
        f"{format_duration(seconds)} at {rate:,.0f} chars/s is {planned / 1e6:.1f}M characters "
        f"({planned / params:.1f} per parameter, {epochs:.1f} passes over {train_chars:,} characters)"
    )
    if rejected:
        why += f"; {rejected}"
    if given:
        why += f"; {', '.join(given)} as given"
    return Sizing(layers, units, dropout, why, rates, planned, epochs, given)
