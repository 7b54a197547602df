"""Learning-rate schedules and early stopping, vectorised over the N_r networks of an ensemble.

Every schedule is measured in optimiser steps. Kinds:

- ``constant``: the starting rate; early stopping after ``stop_patience`` steps without improvement.
- ``cosine``: linear warm-up, then cosine decay to ``min_lr`` at the end of the step budget (runs to the end,
  keeping the best weights).
- ``plateau``: torch's ``ReduceLROnPlateau`` evaluated once per epoch: multiply by ``factor`` after more than
  ``patience`` steps (default 10 epochs) without a relative improvement of ``threshold``; early stopping after
  ``stop_patience`` steps (default 20 epochs). Budget: ``max_epochs`` (default 100) epochs.
- ``adjustable`` (default): the same decay on plateau, but warm-up, evaluation interval, patience, budget are
  set in optimiser steps from the budget, and the budget grows with N_D:
  ``budget = max(min_steps, min_epochs * steps_per_epoch)``; training ends after ``max_decays`` decays and one
  more plateau. See docs/training.md for why this keeps optimisation comparable across N_D.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from moirescale.errors import UserError
from moirescale.train.data import steps_per_epoch

SCHEDULES = ("constant", "cosine", "plateau", "adjustable")


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str
    lr: float  # starting (peak) learning rate
    budget: int  # most optimiser steps
    eval_every: int  # steps between validations
    warmup: int = 0  # linear warm-up steps (from lr/warmup up to lr)
    patience: int = 0  # steps without improvement before a decay (plateau, adjustable); 0: never decay
    factor: float = 0.5  # decay factor on plateau
    min_lr: float = 0.0  # floor of the decayed rate (cosine: its end value)
    max_decays: int = -1  # adjustable: stop at the first plateau after this many decays; -1: never
    stop_patience: int = 0  # steps without improvement before early stopping; 0: never
    threshold: float = 1e-4  # relative improvement that counts for the plateau test (torch's default)
    val_samples: int = 4096  # validate on the first this-many validation samples (0: all); final MSE uses all

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled(self, factor: float) -> ScheduleConfig:
        """This schedule with ``factor`` times the step budget (a convergence check), the settings that
        follow from the budget (validation interval, warm-up and patience of the adjustable schedule, the
        cosine warm-up) derived again by the same rules; whatever set the budget (``max_epochs``,
        ``max_steps``, ``min_steps``/``min_epochs``) is scaled with it."""
        if not 0 < factor < math.inf:
            raise UserError(f"a budget factor must be a finite number > 0, got {factor}")
        budget = max(1, math.ceil(self.budget * factor))
        if self.kind == "adjustable":
            return replace(self, budget=budget, eval_every=max(10, budget // 50),
                           warmup=min(100, budget // 20), patience=max(250, budget // 10))
        if self.kind == "cosine":
            return replace(self, budget=budget, warmup=min(100, budget // 20))
        return replace(self, budget=budget)


# The adjustable schedule's budget defaults: max(min_steps, min_epochs * steps per epoch) optimiser steps.
ADJUSTABLE_DEFAULTS: dict[str, float] = {"min_steps": 2000, "min_epochs": 20}


def budget_check_options(
    schedule_kw: dict[str, Any], max_epochs: int | None, factor: float
) -> dict[str, Any]:
    """The schedule options of a convergence check: the same schedule with ``factor`` times its budget.

    Where the budget is the adjustable schedule's ``max(min_steps, min_epochs * steps per epoch)``, the check
    scales those two options (the form every check so far was run with, so its run ids stay the same); where
    ``max_epochs`` or ``max_steps`` sets it, it adds ``budget_factor``, which :func:`schedule_config` applies
    with :meth:`ScheduleConfig.scaled` after the budget is known (scaling ``min_*`` alone changed nothing).
    """
    if max_epochs is None and "max_steps" not in schedule_kw and "budget_factor" not in schedule_kw:
        kw = {**ADJUSTABLE_DEFAULTS, **schedule_kw}
        kw["min_steps"] = math.ceil(float(kw["min_steps"]) * factor)
        kw["min_epochs"] = float(kw["min_epochs"]) * factor
        return kw
    return {**schedule_kw, "budget_factor": float(schedule_kw.get("budget_factor", 1.0)) * factor}


def schedule_config(
    kind: str, lr: float, n_train: int, batch_size: int, max_epochs: int | None = None, **kw: Any
) -> ScheduleConfig:
    """The default recipe of a schedule for N_D = ``n_train``, with any field overridden by ``kw``.

    Extra keys for ``adjustable``: ``min_steps`` (2000), ``min_epochs`` (20), ``max_steps`` (none) shape the
    budget; any :class:`ScheduleConfig` field can be given directly.
    """
    if kind not in SCHEDULES:
        raise UserError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    if not 0 < lr < math.inf:
        raise UserError(f"learning rate must be a finite number > 0, got {lr}")
    spe = steps_per_epoch(int(n_train), int(batch_size))
    kw = dict(kw)
    for key, value in kw.items():  # YAML or --schedule-opt: "abc", null or nan must not reach the arithmetic
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UserError(f"schedule option {key} must be a finite number, got {value!r}")
    min_steps = int(kw.pop("min_steps", ADJUSTABLE_DEFAULTS["min_steps"]))
    min_epochs = float(kw.pop("min_epochs", ADJUSTABLE_DEFAULTS["min_epochs"]))
    max_steps = kw.pop("max_steps", None)
    budget_factor = float(kw.pop("budget_factor", 1.0))
    if budget_factor <= 0:
        raise UserError(f"schedule option budget_factor must be > 0, got {budget_factor}")
    names = {f.name for f in fields(ScheduleConfig)} - {"kind", "lr"}
    bad = sorted(set(kw) - names)
    if bad:
        raise UserError(
            f"unknown schedule option(s) {', '.join(bad)}; known: min_steps, min_epochs, max_steps, "
            "budget_factor, "
            + ", ".join(sorted(names))
        )
    budget = max(min_steps, math.ceil(min_epochs * spe)) if kind == "adjustable" else 100 * spe
    if max_epochs is not None:
        if int(max_epochs) < 1:
            raise UserError(f"max_epochs must be >= 1, got {max_epochs}")
        budget = int(max_epochs) * spe
    if max_steps is not None:
        budget = min(budget, int(max_steps))
    budget = max(1, budget)
    if kind == "adjustable":
        eval_every = max(10, budget // 50)
        cfg = ScheduleConfig(
            kind,
            lr,
            budget,
            eval_every,
            warmup=min(100, budget // 20),
            patience=max(250, budget // 10),
            factor=0.5,
            min_lr=0.0,
            max_decays=4,
        )
    elif kind == "plateau":
        cfg = ScheduleConfig(
            kind, lr, budget, spe, patience=10 * spe, factor=0.5, min_lr=lr * 1e-3, stop_patience=20 * spe
        )
    elif kind == "cosine":
        cfg = ScheduleConfig(kind, lr, budget, spe, warmup=min(100, budget // 20), min_lr=lr * 1e-2)
    else:
        cfg = ScheduleConfig(kind, lr, budget, spe, stop_patience=20 * spe)
    if budget_factor != 1.0:
        cfg = cfg.scaled(budget_factor)
    cfg = replace(cfg, **kw)
    if (
        cfg.eval_every < 1
        or cfg.budget < 1
        or cfg.val_samples < 0
        or cfg.warmup < 0
        or not 0 < cfg.factor < 1
    ):
        raise UserError(f"bad schedule settings: {cfg}")
    return cfg


class Schedule:
    """Rates, plateau decays and early stopping of ``n`` networks that step together.

    Call :meth:`lr` before each optimiser step (``step`` counts steps already taken) and :meth:`observe`
    after each validation. Networks are independent: each has its own best loss, counters and rate.
    """

    def __init__(self, cfg: ScheduleConfig, n: int = 1):
        self.cfg = cfg
        self.base = np.full(n, cfg.lr, dtype=np.float64)  # rate after decays (before warm-up/cosine factors)
        self.best = np.full(n, np.inf)  # best loss for the plateau test (relative threshold)
        self.best_strict = np.full(n, np.inf)  # best loss for keeping weights
        self.bad_steps = np.zeros(n, dtype=np.int64)  # steps since the last improvement or decay
        self.since_best = np.zeros(n, dtype=np.int64)  # steps since the last improvement (early stopping)
        self.n_decays = np.zeros(n, dtype=np.int64)
        self.stopped = np.zeros(n, dtype=bool)
        self.last_eval = 0

    def state_dict(self) -> dict[str, Any]:
        """The counters (numpy arrays and the last validation step); the config is the caller's."""
        state = {k: v for k, v in vars(self).items() if k != "cfg"}
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            if k not in vars(self) or k == "cfg":
                raise KeyError(f"not a schedule counter: {k!r}")
            setattr(self, k, np.array(v) if isinstance(v, np.ndarray) else v)

    def lr(self, step: int) -> np.ndarray:
        """Learning rate of every network for the update after ``step`` completed steps."""
        c = self.cfg
        warm = min(1.0, (step + 1) / c.warmup) if c.warmup > 0 else 1.0
        if c.kind == "cosine":
            span = max(1, c.budget - c.warmup)
            t = min(1.0, max(0, step - c.warmup) / span)
            return np.full_like(
                self.base, warm * (c.min_lr + (c.lr - c.min_lr) * 0.5 * (1 + math.cos(math.pi * t)))
            )
        return self.base * warm

    def observe(self, step: int, loss: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        """Record the validation loss of each network after ``step`` steps; return who improved.

        ``active`` marks the networks that are still training (others are left untouched).
        """
        c = self.cfg
        loss = np.asarray(loss, dtype=np.float64)
        act = ~self.stopped if active is None else (np.asarray(active, bool) & ~self.stopped)
        dt = step - self.last_eval
        self.last_eval = step
        improved = act & (loss < self.best_strict)
        self.best_strict[improved] = loss[improved]
        self.since_best[act] += dt
        self.since_best[improved] = 0
        better = act & (loss < self.best * (1 - c.threshold))
        self.best[better] = loss[better]
        self.bad_steps[act] += dt
        self.bad_steps[better] = 0
        if c.kind in ("plateau", "adjustable") and c.patience > 0:
            plateau = act & (self.bad_steps > c.patience)
            if c.kind == "adjustable" and c.max_decays >= 0:
                done = plateau & (self.n_decays >= c.max_decays)
                self.stopped |= done
                plateau &= ~done
            new = np.maximum(self.base * c.factor, c.min_lr)
            changed = plateau & (self.base - new > 1e-8)  # torch: eps = 1e-8
            self.base[changed] = new[changed]
            self.n_decays[changed] += 1
            self.bad_steps[plateau] = 0
        if c.stop_patience > 0:
            self.stopped |= act & (self.since_best >= c.stop_patience)
        return improved
