"""Training: one loop for every model, ensembles of FCN realizations, schedules, checkpoints.

Main entry: :func:`run_spec` (a :class:`TrainSpec` on a dataset store -> results rows + checkpoints).
Names are imported lazily (PEP 562) so that ``moirescale --help`` does not pay for torch and pandas.
"""

from __future__ import annotations

from moirescale._lazy import lazy_exports

_EXPORTS = {
    "compare_schedules": "compare",
    "summarize_schedules": "compare",
    "TrainData": "data",
    "load_train_data": "data",
    "load_checkpoint": "run",
    "run_spec": "run",
    "train_arrays": "run",
    "SCHEDULES": "schedules",
    "Schedule": "schedules",
    "ScheduleConfig": "schedules",
    "schedule_config": "schedules",
    "TrainSpec": "spec",
    "group_id": "spec",
    "data_seed": "spec",
    "realization_seed": "spec",
    "run_id": "spec",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("moirescale.train", _EXPORTS, globals())
