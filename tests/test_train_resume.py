"""A killed training continues from its saved state and ends exactly as the uninterrupted run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from moirescale.train import TrainSpec, train_arrays
from moirescale.train.resume import read_progress
from moirescale.train.run import discard_resume, run_spec
from moirescale.train.spec import run_id


class Killed(Exception):
    """Stands for SIGKILL: the training stops between two validation points."""


def spec_for(**kw) -> TrainSpec:
    # Tight patience: plateau decays and early stopping happen, so the schedule's counters matter.
    base = dict(arch="fcn", target="all", n_train=128, realizations=(0, 1, 2), batch_size=32,
                model_kw={"n_layers": 2, "width": 8}, schedule="adjustable", max_epochs=12,
                schedule_kw={"patience": 8, "threshold": 0.2, "max_decays": 2, "eval_every": 4})
    base.update(kw)
    return TrainSpec(**base)


def counting(kill_at: int | None = None) -> tuple[list[int], object]:
    """A progress callable that counts validation points and raises :class:`Killed` at the ``kill_at``-th."""
    calls: list[int] = []

    def progress(delta: int, desc: str) -> None:
        if not desc:  # the end-of-group report, not a validation point
            return
        calls.append(delta)
        if kill_at is not None and len(calls) == kill_at:
            raise Killed

    return calls, progress


def assert_same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        assert (x.realization, x.result.status) == (y.realization, y.result.status)
        assert (x.result.steps, x.result.epochs) == (y.result.steps, y.result.epochs)
        assert x.result.history == y.result.history
        assert (x.result.best_step, x.result.final_lr) == (y.result.best_step, y.result.final_lr)
        assert np.array_equal(x.result.test_mse, y.result.test_mse)
        assert all(torch.equal(x.state[k], y.state[k]) for k in x.state)


@pytest.mark.parametrize(
    "kw, ensemble",
    [
        ({"shared_data": False, "noise_train": 0.05}, True),  # own subsets, one (R, B) gather a step
        ({"shared_data": True}, True),  # one shared batch stream
        ({"shared_data": False}, False),  # one network after another (the module engine)
    ],
    ids=["own-data-ensemble", "shared-ensemble", "sequential"],
)
def test_killed_run_resumes_to_the_uninterrupted_result(data, tmp_path, kw, ensemble):
    spec = spec_for(**kw)
    full_calls, full_progress = counting()
    reference = train_arrays(spec, data, ensemble=ensemble, progress=full_progress)
    assert len({t.result.final_lr for t in reference}) > 1 or ensemble is False, "want decays to differ"

    kill_at = len(full_calls) // 2
    with pytest.raises(Killed):
        train_arrays(spec, data, ensemble=ensemble, progress=counting(kill_at)[1], resume_dir=tmp_path,
                     resume_every=0)
    states = sorted(tmp_path.glob("*.resume.pt"))
    assert states, "a state was saved before the kill"
    prog = read_progress(states[-1])  # what `moirescale status` shows, read without the tensors
    assert prog is not None and 0 < prog["step"] < prog["budget"]
    assert prog["networks"] == (3 if ensemble else 1)
    calls, progress = counting()
    resumed = train_arrays(spec, data, ensemble=ensemble, progress=progress, resume_dir=tmp_path,
                           resume_every=0)
    assert_same(resumed, reference)
    # It continued: the validation points before the last save were not run again.
    assert len(calls) == len(full_calls) - (kill_at - 1)


def test_a_state_of_another_group_or_an_unreadable_one_is_ignored(data, tmp_path, caplog):
    spec = spec_for(realizations=(0, 1, 2))
    with pytest.raises(Killed):
        train_arrays(spec, data, progress=counting(3)[1], resume_dir=tmp_path, resume_every=0)
    (state,) = tmp_path.glob("*.resume.pt")
    assert state.name == f"{run_id(spec, 0)}.resume.pt"
    # Same first network, other members: the file is named alike but its key differs.
    other = replace(spec, realizations=(0, 1))
    reference = train_arrays(other, data)
    assert_same(train_arrays(other, data, resume_dir=tmp_path, resume_every=0), reference)
    assert "belongs to another run" in caplog.text
    state.write_bytes(b"not a torch file")
    assert_same(train_arrays(other, data, resume_dir=tmp_path, resume_every=3600), reference)
    assert "unreadable" in caplog.text


@pytest.mark.parametrize("keep_states", [False, True])
def test_run_spec_deletes_only_its_own_states(tiny_store: Path, tmp_path: Path, keep_states: bool):
    """run_spec deletes its training states once the checkpoints are written, or, with ``keep_states`` (the
    sweep's workers, ``moirescale train``), leaves them to the caller, who deletes them after recording the
    rows (discard_resume): a kill between the two then loses no training."""
    spec = TrainSpec("fcn", "theta", 64, realizations=(0, 1), batch_size=32, schedule="constant",
                     max_epochs=2, model_kw={"n_layers": 2, "width": 8}, channels="top")
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    foreign = folder / "someone-else.resume.pt"
    foreign.write_bytes(b"x")
    rows = run_spec(spec, tiny_store, tmp_path / "run", device="cpu", progress=False, resume_every=0,
                    keep_states=keep_states)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    final = sorted([f"{run_id(spec, 0)}.pt", f"{run_id(spec, 1)}.pt", foreign.name])
    state = f"{run_id(spec, 0)}.resume.pt"  # the ensemble's one state, named after its first network
    assert sorted(p.name for p in folder.iterdir()) == (sorted([*final, state]) if keep_states else final)
    discard_resume(spec, folder)
    assert sorted(p.name for p in folder.iterdir()) == final


def test_moirescale_train_killed_with_sigkill_continues(tiny_store: Path, tmp_path: Path):
    """The real thing: `moirescale train` SIGKILLed once it has saved a state, then the same command again,
    ends with the rows of an uninterrupted run (and deletes its state)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from moirescale.results import read_results

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "moirescale.cli", "train", "--data", str(tiny_store), "--out", str(out),
                "--n-layers", "2", "--width", "16", "--target", "J", "--n-train", "128",
                "--realizations", "2",
                "--batch-size", "16", "--schedule", "constant", "--max-epochs", "150", "--no-progress",
                "--resume-every", "0"]

    reference = subprocess.run(cmd(tmp_path / "ref"), capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("*.resume.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before saving a state"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.parquet").exists() or read_results(out).empty
    assert "saved state: " in _status(out) and " and 1 more networks: step " in _status(out)
    again = subprocess.run(cmd(out), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    text = _status(out)  # `moirescale status` of a train directory: its grid point, and no state left
    assert "FCN 2x16" in text and " 128 " in text and "saved state" not in text
    cols = ["run_id", "status", "steps", "final_lr", "test_mse", "val_mse", "test_mse_labels"]
    a = read_results(tmp_path / "ref").sort_values("run_id")[cols].reset_index(drop=True)
    b = read_results(out).sort_values("run_id")[cols].reset_index(drop=True)
    assert a.equals(b)
    assert not list((out / "checkpoints").glob("*.resume.pt"))


def _status(out: Path) -> str:
    from rich.console import Console

    from moirescale.sweep.status import status_report

    con = Console(record=True, width=300)
    status_report(out, con)
    return con.export_text()
