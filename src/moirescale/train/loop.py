"""THE training loop, shared by every architecture and by ensembles (see engines.py).

MSE on min-max scaled labels, mini-batches from a seeded :class:`BatchStream`, a validation pass every
``cfg.eval_every`` optimiser steps driving the schedule and early stopping (best weights kept per network),
then the per-target test MSE of the best weights. A non-finite loss stops only that network (``diverged``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from moirescale.train.data import BatchStream, MemberStreams, TrainData
from moirescale.train.precision import decode_images
from moirescale.train.resume import ResumeFile, to_numpy, to_tensors
from moirescale.train.schedules import Schedule, ScheduleConfig


@dataclass
class NetResult:
    """Outcome of one network. MSEs are per output column, in scaled label units."""

    status: str = "ok"  # ok / diverged
    error: str = ""
    val_mse: np.ndarray | None = None
    test_mse: np.ndarray | None = None
    steps: int = 0
    epochs: float = 0.0
    final_lr: float = float("nan")
    best_step: int = 0
    history: list[tuple[int, float, float, float]] = field(default_factory=list)  # (step, lr, train, val)


@dataclass
class Tensors:
    """The training data as tensors on the device, label columns already picked for the target.

    Images are held as ``images`` (e.g. bf16 for a bf16 run, :func:`moirescale.train.precision.images_for`);
    with ``images=None`` they stay the store's int16 codes when they arrive as such (2 bytes a pixel, exact;
    :func:`~moirescale.train.precision.decode_images` turns a batch into floats) and become ``dtype``
    otherwise. Labels are always ``dtype``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @classmethod
    def from_data(
        cls,
        data: TrainData,
        columns: list[int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        images: torch.dtype | None = None,
    ) -> Tensors:
        def t(a: np.ndarray, image: bool = False) -> torch.Tensor:
            x = torch.as_tensor(np.ascontiguousarray(a))
            if not image:
                return x.to(device=device, dtype=dtype)
            want = images or (torch.int16 if x.dtype == torch.int16 else dtype)
            if x.dtype == want:
                return x.to(device)
            out = torch.empty(x.shape, dtype=want, device=device)
            for i in range(0, len(x), 4096):  # in chunks: no full-size fp32 copy of the codes
                out[i : i + 4096] = decode_images(x[i : i + 4096].to(device), want)
            return out

        return cls(
            t(data.x_train, True),
            t(data.y_train[:, columns]),
            t(data.x_val, True),
            t(data.y_val[:, columns]),
            t(data.x_test, True),
            t(data.y_test[:, columns]),
        )


def _mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(R, N, o) predictions vs (N, o) labels -> (R, o) MSE, accumulated in float64."""
    return (pred.double() - y.double()).square().mean(1)


def gather_rows(x: torch.Tensor, idx: torch.Tensor, buf: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``idx`` (R, B) of ``x`` (N, ...) as one (R, B, ...) tensor: a single ``index_select``.

    With ``buf`` (at least R*B rows) the rows land in its leading part: on a CPU, writing into a fresh tensor
    of R*B images costs more in page faults than the copy itself (6x measured at 16 x 64 x 100² floats).
    """
    flat = idx.reshape(-1)
    if buf is None:
        return torch.index_select(x, 0, flat).view(*idx.shape, *x.shape[1:])
    out = buf[: flat.numel()]
    torch.index_select(x, 0, flat, out=out)
    return out.view(*idx.shape, *x.shape[1:])


class _Batches:
    """Each step's training batch, decoded for the engine.

    One subset for all networks: one ``(B, ...)`` batch per step, shared. One subset per network: each active
    network's own ``(R, B, ...)`` batch, in one gather. ``noise`` > 0 adds Gaussian pixel noise to each batch.
    """

    def __init__(self, data: Tensors, subsets: list[np.ndarray], batch_seeds: list[int], batch_size: int,
                 n: int, noise: float, input_dtype: torch.dtype) -> None:
        if len(subsets) not in (1, n):
            raise ValueError("need one subset for all networks or one per network")
        self.data, self.noise, self.input_dtype = data, noise, input_dtype
        dev = data.x_train.device
        self.feed: BatchStream | MemberStreams
        if len(subsets) == 1:
            self.feed = BatchStream(subsets[0], batch_size, batch_seeds[0])
            rows = batch_size
        else:
            self.feed = MemberStreams(subsets, batch_size, batch_seeds, dev)
            rows = n * self.feed.bounds[0][1]
            self.xbuf = data.x_train.new_empty((rows, *data.x_train.shape[1:]))
        self.steps_per_epoch = self.feed.steps_per_epoch
        # Decoded batches land in one reused buffer (int16 images only; float images are used as they are).
        self.dbuf = None
        if data.x_train.dtype == torch.int16:
            self.dbuf = torch.empty(rows * data.x_train[0].numel(), dtype=torch.float32, device=dev)

    def next(self, active: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch ``(x, y)`` of the ``active`` networks."""
        x, y, feed = self.data.x_train, self.data.y_train, self.feed
        dev = x.device
        if isinstance(feed, BatchStream):
            idx = feed.next().to(dev)
            xb, yb = x[idx], y[idx]
            if self.noise > 0:
                # clipped like the evaluation noise (moirescale.use.noise): images live in [-1, 1]
                xb = decode_images(xb).add_(feed.noise(tuple(xb.shape), self.noise).to(dev)).clamp_(-1.0, 1.0)
        else:
            idx = feed.next(active)  # (R, B): each network's own batch ...
            xb, yb = gather_rows(x, idx, self.xbuf), gather_rows(y, idx)  # ... in one gather
            if self.noise > 0:
                xb = decode_images(xb)
                xb.add_(feed.noise(active, tuple(xb.shape[1:]), self.noise).to(dev)).clamp_(-1.0, 1.0)
        return decode_images(xb, self.input_dtype, self.dbuf), yb  # codes -> the engine's dtype, one pass


def fit(
    engine: Any,
    data: Tensors,
    subsets: list[np.ndarray],
    batch_seeds: list[int],
    batch_size: int,
    cfg: ScheduleConfig,
    noise: float = 0.0,
    on_eval: Callable[[int, int, float, float], None] | None = None,
    resume: ResumeFile | None = None,
) -> list[NetResult]:
    """Train the ``engine.n`` networks of ``engine`` and return one :class:`NetResult` each.

    ``subsets``/``batch_seeds``: one entry shared by all networks (shared batch: one ``(B, ...)`` batch per
    step), or one per network (each its own subset and order: one ``(R, B, ...)`` gather per step).
    ``on_eval(step, n_active, train_loss, val_loss)`` is called after each validation (for progress bars).
    ``resume``: where the loop's state is saved at validation points and, if a state of this group is there,
    where it starts from (:mod:`moirescale.train.resume`): a resumed run ends exactly as an uninterrupted one.
    """
    n = engine.n
    batches = _Batches(data, subsets, batch_seeds, batch_size, n, noise, engine.input_dtype)
    sched = Schedule(cfg, n)
    res = [NetResult() for _ in range(n)]
    run_loss, run_count, last_lr = np.zeros(n), np.zeros(n), np.full(n, np.nan)
    step = 0
    # The schedule and early stopping watch a fixed i.i.d. part of the validation split: at paper scale
    # (14 336 samples) full passes every ~budget/50 steps would cost more than training small-N_D nets.
    x_val, y_val = data.x_val, data.y_val
    if 0 < cfg.val_samples < len(x_val):
        x_val, y_val = x_val[: cfg.val_samples], y_val[: cfg.val_samples]

    def state() -> dict[str, Any]:
        progress = {"step": step, "budget": cfg.budget, "active": int(engine.active.size), "networks": n}
        return {"step": step, "loss": to_tensors([run_loss, run_count, last_lr]), "progress": progress,
                "res": [to_tensors(vars(r)) for r in res], "sched": to_tensors(sched.state_dict()),
                "engine": engine.state_dict(), "feed": batches.feed.state_dict()}

    saved = resume.load() if resume is not None else None
    if saved is not None:
        step = int(saved["step"])
        run_loss, run_count, last_lr = to_numpy(saved["loss"])
        res = [NetResult(**{**to_numpy(r), "history": list(map(tuple, r["history"]))}) for r in saved["res"]]
        sched.load_state_dict(to_numpy(saved["sched"]))
        engine.load_state_dict(saved["engine"])
        batches.feed.load_state_dict(saved["feed"])

    def stop(local: np.ndarray, why: str | None = None) -> None:
        """End the networks ``engine.active[local]`` at this step (``diverged`` when there is a why)."""
        for i in engine.active[local]:
            res[i].steps, res[i].epochs = step, step / batches.steps_per_epoch
            if why is not None:
                res[i].status, res[i].error = "diverged", why.format(lr=last_lr[i])
        engine.drop(local)

    def validate() -> None:
        """Score the active networks on the validation part; the schedule keeps the best, stops the done."""
        act = engine.active
        val = _mse(engine.predict(x_val), y_val).mean(1).cpu().numpy()
        bad = ~np.isfinite(val)
        if bad.any():
            stop(bad, f"non-finite validation loss at step {step} (lr={{lr:.3g}})")
            act, val = engine.active, val[~bad]
        full = np.full(n, np.inf)
        full[act] = val
        mask = np.zeros(n, dtype=bool)
        mask[act] = True
        improved = sched.observe(step, full, mask)
        for i in act[improved[act]]:
            res[i].best_step = step
        engine.keep_best(improved[act])
        train = run_loss[act] / np.maximum(1, run_count[act])
        for i, tr, v in zip(act, train, val, strict=True):
            res[i].history.append((step, float(last_lr[i]), float(tr), float(v)))
        run_loss[act], run_count[act] = 0.0, 0
        stop(sched.stopped[act])
        if on_eval is not None and val.size:
            on_eval(step, int(engine.active.size), float(np.mean(train)), float(np.mean(val)))

    while step < cfg.budget and engine.active.size:
        act = engine.active
        lr = sched.lr(step)[act]
        last_lr[act] = lr
        xb, yb = batches.next(act)
        losses = engine.train_step(xb, yb, lr).double().cpu().numpy()  # (n_active,): one sync per step
        step += 1
        bad = ~np.isfinite(losses)
        run_loss[act[~bad]] += losses[~bad]
        run_count[act] += 1
        if bad.any():
            stop(bad, f"non-finite training loss at step {step} (lr={{lr:.3g}})")
        if engine.active.size and (step % cfg.eval_every == 0 or step == cfg.budget):
            validate()
            if resume is not None and resume.due():
                resume.save(state())
    stop(np.ones(engine.active.size, dtype=bool))
    if resume is not None and resume.saved:  # a run long enough to have saved: its end state too
        resume.save(state())
    _score_best(engine, data, res, sched.best_strict, last_lr)
    return res


def _score_best(
    engine: Any, data: Tensors, res: list[NetResult], best: np.ndarray, last_lr: np.ndarray
) -> None:
    """Fill in each network's last learning rate and its best weights' validation and test MSE; a network that
    never had a finite validation loss is ``diverged``."""
    ok = [i for i, r in enumerate(res) if r.status == "ok" and np.isfinite(best[i])]
    for i, r in enumerate(res):
        r.final_lr = float(last_lr[i])
        if r.status == "ok" and i not in ok:
            r.status, r.error = "diverged", "no finite validation loss"
    if ok:
        val = _mse(engine.predict_best(data.x_val, ok), data.y_val).cpu().numpy()
        test = _mse(engine.predict_best(data.x_test, ok), data.y_test).cpu().numpy()
        for j, i in enumerate(ok):
            res[i].val_mse, res[i].test_mse = val[j], test[j]
