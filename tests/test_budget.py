"""Issue 10: training for a time budget — durations, the schedule laid over the clock, the size rule, the stop,
resume with more time, signals, and the learning rate set mid-fit on both backends."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TINY_TEXT, run_cli

import charlstm
from charlstm.errors import CharlstmError, TrainingInterrupted
from charlstm.training import budget as budgets
from charlstm.training.budget import BudgetSchedule, choose_size, lr_factor, parse_duration
from charlstm.training.saving import read_meta

SMALL = dict(embedding_dim=8, seq_len=24, batch_size=8, lr=1e-2, sample_length=20, sample_temperatures=[0.5],
             verbose=0)


def _rows(run: Path) -> list[dict[str, float]]:
    with open(run / "metrics.csv") as fh:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()} for r in csv.DictReader(fh)]


# -- durations -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400), ("2m30s", 150), ("600", 600), (45, 45), (" 1H ", 3600)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "m", "1m1h", "5m5m", "-5s", "0", "0s", "1h 30", "nan"])
def test_bad_durations_are_one_clear_error(text):
    with pytest.raises(CharlstmError, match="--time"):
        parse_duration(text)


def test_cli_rejects_a_bad_duration_before_loading_anything(tiny_corpus, tmp_path):
    r = run_cli("train", str(tiny_corpus), "--time", "ten minutes", "--out", str(tmp_path / "r"))
    assert r.returncode == 2
    assert "charlstm: error: --time expects a duration such as 90s, 10m or 1h30m" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "r").exists()
    r = run_cli("train", str(tiny_corpus), "--time", "1m", "--epochs", "3", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "--time or --epochs, not both" in r.stderr
    r = run_cli("train", str(tiny_corpus), "--lr-schedule", "wsd", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "give --time" in r.stderr


# -- the schedule over a simulated clock ---------------------------------------------------------------
def test_shapes():
    assert lr_factor("wsd", 0.0) == pytest.approx(0.1)  # warm-up starts at 10 % of the peak
    assert all(lr_factor("wsd", p) == 1.0 for p in np.linspace(budgets.WARMUP, 0.799, 20))
    decay = [lr_factor("wsd", p) for p in np.linspace(0.8, 1.0, 21)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False)) and decay[-1] == 0.0
    cosine = [lr_factor("cosine", p) for p in np.linspace(budgets.WARMUP, 1.0, 50)]
    assert cosine[0] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(cosine, cosine[1:], strict=False))
    assert lr_factor("constant", 0.0) == lr_factor("constant", 1.0) == 1.0


def _simulate(seconds: float, speed, shape: str = "wsd", reserve: float = 2.0, first_guess: float | None = None):
    """Drive a schedule with a simulated clock: `speed(t)` steps per second at time t; the schedule starts
    from `first_guess` (the probe's figure; default: right)."""
    schedule = BudgetSchedule(seconds, 1e-2, shape, rate=first_guess or speed(0.0), reserve=reserve)
    t = 0.0
    schedule.start(t)
    trace = []
    while not schedule.should_stop(t):
        t += 1.0 / speed(t)
        trace.append((t, schedule.step(t)))
    return schedule, trace


@pytest.mark.parametrize("change", ["slowdown", "speedup", "steady", "probe too slow", "probe too fast"])
def test_the_decay_ends_at_the_budget_when_the_speed_changes(change):
    budget = 600.0
    speed = {
        "slowdown": lambda t: 20.0 if t < 0.4 * budget else 5.0,  # the machine got busy
        "speedup": lambda t: 5.0 if t < 0.4 * budget else 20.0,
    }.get(change, lambda t: 10.0)
    guess = {"probe too slow": 1.0, "probe too fast": 100.0}.get(change)
    schedule, trace = _simulate(budget, speed, first_guess=guess)
    times = np.array([t for t, _ in trace])
    lrs = np.array([lr for _, lr in trace])
    end = times[-1]
    assert budget - schedule.reserve - 1.0 <= end <= budget  # stops with the final validation's time kept back
    # the decay's end (the rate below 2 % of its peak) lands within 10 % of the budget ...
    decay_end = times[np.argmax(lrs <= 0.02 * 1e-2)]
    assert lrs[-1] <= 0.02 * 1e-2 and decay_end >= 0.9 * budget
    # ... and the decay covers the last fifth of the steps actually taken, however the speed moved
    peak_steps = np.flatnonzero(lrs >= 1e-2 * 0.999)
    decay_steps = len(lrs) - 1 - peak_steps[-1]
    assert decay_steps / len(lrs) == pytest.approx(budgets.DECAY, abs=0.03)
    # the rate never goes back up once it has started to fall
    after = lrs[peak_steps[-1] :]
    assert np.all(np.diff(after) <= 1e-12)
    if change == "slowdown":
        # laid out once from the first speed, the schedule would still be at its peak at the end
        first_total = speed(0.0) * (budget - schedule.reserve)
        assert lr_factor("wsd", len(lrs) / first_total) == 1.0


def test_a_resumed_segment_goes_on_from_its_progress():
    first, _ = _simulate(100.0, lambda t: 10.0)
    state = first.state(50.0)
    again = BudgetSchedule(state["seconds"], state["peak_lr"], state["shape"], spent=40.0,
                           steps_done=state["steps_done"], progress=0.5, rate=10.0)
    again.start(0.0)
    assert again.remaining(0.0) == pytest.approx(60.0)
    assert again.step(0.1) == pytest.approx(1e-2)  # at 50 % progress a wsd run is at its peak
    with pytest.raises(CharlstmError, match="wsd, cosine or constant"):
        BudgetSchedule(10, 1e-2, "step")


# -- the size rule -------------------------------------------------------------------------------------
def _speeds(probed: list):
    # a network's speed falls with its parameter count (roughly as on a CPU)
    def measure(layers, units):
        probed.append((layers, units))
        return 3e9 / budgets.lstm_params(layers, units, 60, 64)

    return measure


def test_the_rule_buys_a_bigger_network_with_more_time_and_probes_only_what_can_qualify():
    probed: list = []
    short = choose_size(30, 300_000, 60, 64, _speeds(probed))
    assert (short.layers, short.units) == (2, 64) and probed == [(2, 64)]  # 2x128 could not qualify at all
    probed.clear()
    mid = choose_size(600, 300_000, 60, 64, _speeds(probed))
    assert (mid.layers, mid.units) == (2, 128) and probed == [(2, 64), (2, 128), (2, 256)]  # timed, too slow
    probed.clear()
    long = choose_size(3600, 300_000, 60, 64, _speeds(probed))
    assert long.units > short.units
    assert probed[-1] != (long.layers, long.units) or long.units == budgets.CANDIDATES[-1][1]
    # the chosen network can see the rule's characters per parameter; the next one could not
    params = budgets.lstm_params(long.layers, long.units, 60, 64)
    assert long.planned_chars >= budgets.CHARS_PER_PARAM * params
    assert f"{long.layers}x{long.units}" in long.chars_per_second
    # a text read about once wants more characters per parameter: the network is no bigger
    big_text = choose_size(600, 10**9, 60, 64, _speeds([]))
    assert big_text.units <= mid.units and "passes" in big_text.why
    # more parameters per character of a text read many times: more dropout; a text read once: none
    size = {"layers": 2, "units": 128}
    small = choose_size(600, 100_000, 60, 64, _speeds([]), explicit=size).dropout
    larger = choose_size(600, 300_000, 60, 64, _speeds([]), explicit=size).dropout
    once = choose_size(600, 10**9, 60, 64, _speeds([]), explicit=size).dropout
    assert small > larger > once == 0.0


def test_explicit_options_always_win():
    probed: list = []
    s = choose_size(3600, 300_000, 60, 64, _speeds(probed), explicit={"layers": 1, "units": 40, "dropout": 0.25})
    assert (s.layers, s.units, s.dropout) == (1, 40, 0.25) and probed == [(1, 40)]
    assert s.explicit == ["dropout", "layers", "units"] and "as given" in s.why
    s = choose_size(3600, 300_000, 60, 64, _speeds([]), explicit={"units": 128})
    assert s.units == 128 and s.layers == 2
    s = choose_size(5, 300_000, 60, 64, _speeds([]), explicit={"layers": 3})
    assert s.layers == 3


# -- a budgeted run on a simulated clock ---------------------------------------------------------------------
# train(clock=...) measures the budget, the intervals and the elapsed time by a clock the test advances one
# step at a time, and the speed probe is replaced by the same figure: the schedule, the stop and the files do
# not depend on how fast (or how busy) the machine is.
STEP = 0.05  # simulated seconds per training step (20 steps a second)
EPOCH_END = 0.3  # simulated seconds of validation and checkpoints per interval


class SimClock:
    """Seconds that pass only when `Tick` says a step (or an interval's end) took them."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tick(keras.callbacks.Callback):
    """Every step takes `step` simulated seconds, `slow` from `after` seconds of fit on (a machine that got
    busy); every interval's end EPOCH_END. Records (seconds into fit, learning rate the step used) per step.
    Placed first (the user's callbacks run before charlstm's), so the budget clock sees the time already spent."""

    def __init__(self, clock: SimClock, step: float = STEP, after: float = math.inf, slow: float = STEP) -> None:
        super().__init__()
        self.clock, self.step, self.after, self.slow, self.trace = clock, step, after, slow, []

    def on_train_begin(self, logs=None):
        self.t0 = self.clock.now

    def on_train_batch_end(self, batch, logs=None):
        busy = self.clock.now - self.t0 > self.after
        self.clock.now += self.slow if busy else self.step
        self.trace.append((self.clock.now - self.t0, float(np.asarray(self.model.optimizer.learning_rate))))

    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += EPOCH_END


def _probe_at(step: float):
    """budget_plan._probe's stand-in: every size runs at one step per `step` simulated seconds."""

    def probe(config, vocab, batch):
        targets = int(np.prod(batch[1].shape))
        return lambda layers, units: targets / step

    return probe


def simulated(clock: SimClock, *callbacks, **kwargs):
    """charlstm.train on a simulated clock, with its probe at the simulated speed."""
    from charlstm.training import budget_plan

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(budget_plan, "_probe", _probe_at(STEP))
        return charlstm.train(clock=clock, callbacks=list(callbacks), **kwargs)


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    text = tmp_path_factory.mktemp("budget") / "text.txt"
    text.write_text(TINY_TEXT * 4, encoding="utf-8")
    out = text.parent / "run"
    clock = SimClock()
    slow = Tick(clock, after=7.0, slow=2 * STEP)  # half the speed after 7 s
    simulated(clock, slow, source=str(text), out=out, time="20s", units=32, **SMALL)
    return out, clock.now, slow.trace, text


def test_a_budgeted_run_ends_within_its_time_with_a_complete_run_directory(budget_run):
    out, now, trace, _ = budget_run
    meta = json.loads((out / "config.json").read_text())
    assert meta["budget"]["startup_seconds"] == 0.0  # nothing before the clock started took simulated time
    assert 20 * 0.9 <= trace[-1][0] <= 20.0  # it used its time, and stopped inside it
    for name in ("config.json", "metrics.csv", "loss.png", "samples.txt", "last.keras", "best.keras", "model.keras"):
        assert (out / name).stat().st_size > 0, name
    rows = _rows(out)
    assert len(rows) >= 3  # checkpoint intervals of 5 simulated seconds
    assert rows[-1]["partial"] == 1 and all(r["partial"] == 0 for r in rows[:-1])  # the budget ended the last
    assert rows[-1]["val_loss"] < 0.8 * math.log(read_meta(out / "model.keras")["vocab"]["size"])  # it learned
    assert all(b["epoch"] > a["epoch"] for a, b in zip(rows, rows[1:], strict=False))  # data epochs, fractional
    assert rows[-1]["time"] == pytest.approx(now, abs=0.01)  # metrics.csv's time is the run's clock
    state = read_meta(out / "last.keras")["train_state"]["budget"]
    assert state["spent"] <= 20.0 and state["progress"] == 1.0  # stopped by its budget, the schedule ended
    assert state["steps_done"] == len(trace)
    # the size: units as given, the rest by the rule, recorded in config.json
    assert meta["config"]["units"] == 32 and meta["config"]["time_budget"] == 20.0
    sizing = meta["budget"]["sizing"]
    assert sizing["explicit"] == ["units"] and sizing["units"] == 32
    assert (meta["config"]["layers"], meta["config"]["dropout"]) == (sizing["layers"], sizing["dropout"])
    assert meta["config"]["lr_schedule"] == budgets.DEFAULT_SHAPE


def test_the_decay_ends_near_the_budget_despite_a_slowdown(budget_run):
    _, _, trace, _ = budget_run
    times = np.array([t for t, _ in trace])
    lrs = np.array([lr for _, lr in trace])
    peak = SMALL["lr"]
    assert lrs.max() == pytest.approx(peak, rel=1e-5)
    assert lrs[-1] <= 0.1 * peak  # decayed by the last step
    left_peak = times[np.flatnonzero(lrs >= 0.999 * peak)[-1]]
    assert left_peak > 7.0  # the decay began after the slowdown, laid over the slower speed
    # ... over the last fifth of the steps actually taken: at the first speed, it would have begun later
    decay_steps = len(lrs) - 1 - np.flatnonzero(lrs >= 0.999 * peak)[-1]
    assert decay_steps / len(lrs) == pytest.approx(budgets.DECAY, abs=0.05)
    assert times[-1] - left_peak > 1.0


def test_resume_with_more_time_relays_the_schedule_from_the_saved_state(budget_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(budget_run[0], out)
    before = read_meta(out / "last.keras")["train_state"]
    steps_before = keras.saving.load_model(out / "last.keras").optimizer.iterations.numpy()
    rows_before = _rows(out)
    with pytest.raises(CharlstmError, match="time budget is spent"):
        charlstm.train(out=out, resume=True, verbose=0)
    with pytest.raises(CharlstmError, match="add time with --time"):
        charlstm.train(out=out, resume=True, epochs=50, verbose=0)
    clock = SimClock()
    probe = Tick(clock)
    simulated(clock, probe, out=out, resume=True, time="10s", verbose=0)
    rows = _rows(out)
    assert len(rows) > len(rows_before) and rows[-1]["partial"] == 1
    assert rows[len(rows_before)]["epoch"] > rows_before[-1]["epoch"]  # the data stream went on
    after = read_meta(out / "last.keras")["train_state"]
    assert after["budget"]["seconds"] == 10.0  # a new segment: what was added
    assert json.loads((out / "config.json").read_text())["config"]["time_budget"] == 30.0
    steps_after = keras.saving.load_model(out / "last.keras").optimizer.iterations.numpy()
    assert steps_after == steps_before + len(probe.trace)  # the optimizer's own count went on
    assert 0.7 * 10 / STEP <= len(probe.trace) <= 10 / STEP  # the steps 10 simulated seconds allow (less checkpoints)
    # warm restart: from the rate it had stopped at, up to the peak, and down again by the end
    lrs = [lr for _, lr in probe.trace]
    assert lrs[0] < 0.2 * SMALL["lr"] and max(lrs) == pytest.approx(SMALL["lr"], rel=1e-5)
    assert after["budget"]["progress"] == 1.0 and lrs[-1] < 0.5 * SMALL["lr"]
    # and it started from the trained weights: no fresh-start loss
    assert rows[len(rows_before)]["loss"] < rows_before[0]["loss"]
    assert before["budget"]["position"] != after["budget"]["position"]


class _SigintAtStep(keras.callbacks.Callback):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_time_for_an_epoch_run_then_ctrl_c_then_the_rest_of_the_time(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    clock = SimClock()
    simulated(clock, Tick(clock), source=str(tiny_corpus), out=out, epochs=1, layers=1, units=24, **SMALL)
    rows = _rows(out)
    assert rows[-1]["lr"] < 0.1 * SMALL["lr"]  # the epoch run's cosine has run out
    assert rows[-1]["time"] == pytest.approx(clock.now, abs=0.01)  # an epoch run's time is the clock's too
    # --resume --time re-lays the schedule over the new time (before: --epochs N trained at the floor)
    probe = Tick(clock)
    with pytest.raises(TrainingInterrupted, match="of the time budget left.*--resume"):
        simulated(clock, probe, _SigintAtStep(15), out=out, resume=True, time=12, verbose=0)
    lrs = [lr for _, lr in probe.trace]
    assert len(lrs) == 15 and lrs[0] < 0.2 * SMALL["lr"] and lrs[-1] > lrs[0]  # warming up from the floor
    state = read_meta(out / "last.keras")["train_state"]["budget"]
    assert 0 < state["spent"] < 12 and state["progress"] < 0.8 and state["steps_done"] == 15
    rows = _rows(out)
    assert rows[-1]["partial"] == 1 and rows[-1]["epoch"] > 1.0  # the interrupted interval is recorded
    # Ctrl-C's resume goes on with the rest of the same budget, from where the data stream stopped
    probe = Tick(clock)
    simulated(clock, probe, out=out, resume=True, verbose=0)
    end = read_meta(out / "last.keras")["train_state"]["budget"]
    assert end["seconds"] == 12 and end["progress"] == 1.0 and end["spent"] <= 12
    assert end["steps_done"] == 15 + len(probe.trace)
    # an epoch run's cosine goes on as a cosine over the time: near its peak just after the warm-up, here on
    # every machine (the step that lands nearest the warm-up's end no longer depends on the machine's speed)
    assert end["shape"] == "cosine" and max(lr for _, lr in probe.trace) > 0.99 * SMALL["lr"]


# -- the learning rate set mid-fit reaches the compiled step, on both backends --------------------------
LR_CHECK = """
import json, sys
import numpy as np, keras
from charlstm.training.backend import set_learning_rate
from charlstm.training.model import ModelSpec, build_model

keras.utils.set_random_seed(0)
model = build_model(ModelSpec(20, embedding_dim=4, layers=1, units=8))
model.compile(optimizer=keras.optimizers.Adam(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x = rng.integers(0, 20, (64, 12)).astype("int32")
y = rng.integers(0, 20, (64, 12)).astype("int32")
snapshots = {}

class Freeze(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:  # from step 4 on: no learning
            set_learning_rate(self.model, 0.0)
        if batch in (2, 7):
            if keras.backend.backend() == "jax":
                self.model.jax_state_sync()
            snapshots[batch] = [w.copy() for w in self.model.get_weights()]

model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[Freeze()])
moved = max(float(np.abs(a - b).max()) for a, b in zip(snapshots[2], snapshots[7]))
print(json.dumps({"backend": keras.backend.backend(), "moved_after_zero_lr": moved,
                  "lr": float(np.asarray(model.optimizer.learning_rate))}))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_learning_rate_set_mid_epoch_takes_effect_at_the_next_step(backend):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    proc = subprocess.run([sys.executable, "-c", LR_CHECK], capture_output=True, text=True, timeout=300,
                          env={**env, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend and result["lr"] == 0.0
    assert result["moved_after_zero_lr"] == 0.0  # with a zero rate, Adam's steps 4-8 moved nothing


def test_a_budgeted_run_on_jax(tmp_path, tiny_corpus):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = tmp_path / "jax"
    r = run_cli("train", str(tiny_corpus), "--backend", "jax", "--time", "10s", "--layers", "1", "--units", "24",
                "--embedding-dim", "8", "--seq-len", "24", "--batch-size", "8", "--lr", "0.01",
                "--sample-length", "20", "--sample-temperatures", "0.5", "--quiet", "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(out)
    assert rows[-1]["partial"] == 1 and rows[-1]["lr"] <= 0.05 * 0.01  # stopped by its budget, decayed
    assert read_meta(out / "last.keras")["train_state"]["budget"]["progress"] == 1.0
    assert json.loads((out / "config.json").read_text())["trained_with"]["backend"] == "jax"


def test_the_demo_trains_for_a_time_budget_not_epochs(tmp_path):
    from charlstm.cli.train import DEMO_SETTINGS

    assert DEMO_SETTINGS["time"] == "90s" and "epochs" not in DEMO_SETTINGS  # the same time on every machine
    out = tmp_path / "demo"
    r = run_cli("demo", "--time", "6s", "--out", str(out))  # Treasure Island from the test KERAS_HOME
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["time_budget"] == 6.0 and meta["budget"]["sizing"]["explicit"] == []  # sized by the rule
    assert f"{meta['config']['layers']} x LSTM({meta['config']['units']})" in r.stdout  # the choice, printed
    # stopped by its budget (what the run did, not how long the machine took to do it)
    assert _rows(out)[-1]["partial"] == 1 and read_meta(out / "last.keras")["train_state"]["budget"]["progress"] == 1.0
    assert "samples from the trained model at the lesson's four temperatures" in r.stdout
