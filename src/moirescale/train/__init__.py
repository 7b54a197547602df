"""Training: one loop for every model, ensembles of FCN realizations, schedules, checkpoints.

Main entry: :func:`run_spec` (a :class:`TrainSpec` on a dataset store -> results rows + checkpoints).
"""

from moirescale.train.compare import compare_schedules, summarize_schedules
from moirescale.train.data import TrainData, load_train_data
from moirescale.train.run import load_checkpoint, make_subsets, run_spec, train_arrays
from moirescale.train.schedules import SCHEDULES, Schedule, ScheduleConfig, schedule_config
from moirescale.train.spec import TrainSpec, group_id, realization_seed, run_id

__all__ = [
    "SCHEDULES",
    "Schedule",
    "ScheduleConfig",
    "TrainData",
    "TrainSpec",
    "compare_schedules",
    "group_id",
    "load_checkpoint",
    "load_train_data",
    "make_subsets",
    "realization_seed",
    "run_id",
    "run_spec",
    "schedule_config",
    "summarize_schedules",
    "train_arrays",
]
