"""A training's state saved while it runs, so that a killed run continues where it stopped.

:func:`moirescale.train.loop.fit` calls :meth:`ResumeFile.save` at validation points (at most every
``every_s`` seconds, and once at the end of a run that saved before) and :meth:`ResumeFile.load` when it
starts. The state is everything the loop carries from one step to the next: the networks' weights, the
optimiser's moments, the best weights, the schedule's counters, the batch streams' generators and the
per-network records, so a resumed run takes exactly the steps the uninterrupted one would have taken.

The file is ``RUNDIR/checkpoints/<run id of the group's first network>.resume.pt``, written through
:func:`moirescale.fsio.atomic_path` (a kill while saving leaves the previous state), holding only tensors
and plain values (read back with ``weights_only=True``), and keyed by the run ids of the networks trained
together: a file of another spec, another group or another torch build is ignored, never loaded.
:func:`moirescale.train.run.run_spec` deletes the job's files once its final checkpoints are written, or
leaves that to its caller, who deletes them once the rows are recorded (the sweep's driver, ``moirescale
train``): a kill between writing the checkpoints and recording the rows then retrains nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moirescale import rundir as rd
from moirescale.fsio import atomic_path

log = logging.getLogger(__name__)

RESUME_EVERY_S = 600.0  # a save of a 3 x 512 ensemble at 100 px (0.5 GB) took 2-5 s here: < 1 % of the run
SUFFIX = rd.RESUME_SUFFIX


@dataclass
class ResumeFile:
    """Where one group of networks saves its training state, and how often.

    ``key``: what the state must belong to (the group's run ids); ``every_s``: the least time between saves
    (0: at every validation point, for tests).
    """

    path: Path
    key: str
    every_s: float = RESUME_EVERY_S
    _last: float = field(default_factory=time.monotonic, repr=False)
    _born: float = field(default_factory=time.monotonic, repr=False)
    saved: bool = field(default=False, repr=False)
    prior_s: float = field(default=0.0, repr=False)  # training time before the resume (the runs killed)

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def save(self, state: dict[str, Any]) -> None:
        with atomic_path(self.path) as tmp:
            wall = self.prior_s + time.monotonic() - self._born
            blob = {"key": self.key, "torch": str(torch.__version__), "wall_s": wall, "state": state}
            torch.save(blob, tmp)
        self._last, self.saved = time.monotonic(), True

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None (no file, or one that is not this group's: it is then overwritten)."""
        if not self.path.is_file():
            return None
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
            ok = blob.get("key") == self.key and blob.get("torch") == str(torch.__version__)
        except Exception as exc:  # a truncated or foreign file: train from the start
            log.warning("ignoring unreadable resume state %s (%s)", self.path, type(exc).__name__)
            return None
        if not ok:
            log.warning("ignoring resume state %s: it belongs to another run or torch build", self.path)
            return None
        log.info("resuming from %s", self.path)
        self.saved, self.prior_s = True, float(blob.get("wall_s", 0.0))
        return blob["state"]

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def read_progress(path: Path) -> dict[str, Any] | None:
    """How far a saved state got, read without its tensors (memory-mapped): the group's run ids, ``step``,
    ``budget``, ``active`` of ``networks`` still training, ``age_s`` since the save, ``wall_s`` of training
    up to it (over every resume). None if unreadable."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        prog = blob["state"]["progress"]
        return {"run_ids": str(blob["key"]).split("|")[1:], "age_s": time.time() - path.stat().st_mtime,
                "wall_s": float(blob.get("wall_s", 0.0)),
                **{k: int(prog[k]) for k in ("step", "budget", "active", "networks")}}
    except Exception:  # a state being replaced, a foreign or truncated file: nothing to report
        return None


def resume_path(folder: Path, first_run_id: str) -> Path:
    return rd.resume_state_path(folder, first_run_id)


def to_tensors(obj: Any) -> Any:
    """numpy arrays (at any depth of dicts/lists) as tensors: the file loads with ``weights_only``."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_tensors(v) for v in obj]
    return obj


def to_numpy(obj: Any) -> Any:
    """The inverse of :func:`to_tensors` for states that hold numpy arrays."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_numpy(v) for v in obj]
    return obj
