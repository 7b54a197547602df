"""The run directory ``RUNDIR/``: every file's name and path, and the readers and writers of its records.

No other module spells a run-directory file name; each asks this one (issue 28). What lives there:

results table (:mod:`moirescale.results`), the sweep's config copy, dataset record, heartbeat, lock and log,
checkpoints, ``fits.json``, ``noise.parquet``, ``figures/``, ``report.html`` and the demo's marker and timing;
docs/architecture.md has the table of who writes and who reads each.

The readers validate what they read back (:mod:`moirescale.readback`); the writers are atomic
(:mod:`moirescale.fsio`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from moirescale.errors import UserError
from moirescale.fsio import atomic_write
from moirescale.readback import read_json

PathLike = str | os.PathLike[str]

# ---------------------------------------------------------------------------------------------------- names
RESULTS = "results.parquet"
CONFIG = "config.yaml"
DATASET = "dataset.json"
HEARTBEAT = "heartbeat.json"
LOCK = ".sweep.lock"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
SWEEP_LOG = "sweep.log"
FITS = "fits.json"
NOISE = "noise.parquet"
FIGURES = "figures"
EXAMPLES = "examples.png"
REPORT = "report.html"
DEMO_MARKER = ".moirescale-demo"
DEMO_TIMING = "demo_timing.json"
DEMO_VARIANT = "fss"  # the demo's second (nuisance-free) variant: a run directory inside the demo's
DEMO_COMPARE = "variants"  # the demo's two-variant comparison (`compare-variants` files) inside it

STAMPED_CONFIG = re.compile(r"^config\.\d{8}T\d{6}\.yaml$")  # an old config kept by `sweep --force`
CHECKPOINT_NAME = re.compile(r"^[0-9a-f]{16}-r\d{4,}(\.resume)?\.pt$")  # run_id + ".pt" / ".resume.pt"
PART_NAME = re.compile(r"^part-[0-9a-f]{32}\.parquet$")  # results.append_rows

# The top-level files and the folders moirescale writes in a run directory.
TOP_FILES = frozenset({DEMO_MARKER, CONFIG, DATASET, HEARTBEAT, LOCK, NOISE, FITS, REPORT, DEMO_TIMING})
FOLDERS = frozenset({LOGS, CHECKPOINTS, RESULTS, FIGURES})
# The folders a sweep's writers must be able to write into (results.check_appendable).
SWEEP_FOLDERS = (RESULTS, CHECKPOINTS, LOGS)


def is_own(folder: str, name: str, figure_names: frozenset[str] = frozenset()) -> bool:
    """Whether ``folder/name`` (``folder`` "" for the top level) is a file name moirescale writes there.

    ``figure_names`` are the file names the figure writers make (``figures/``); the caller passes them.
    """
    if folder == "":
        return name in TOP_FILES or bool(STAMPED_CONFIG.match(name))
    if folder == LOGS:
        return name == SWEEP_LOG
    if folder == CHECKPOINTS:
        return bool(CHECKPOINT_NAME.match(name))
    if folder == RESULTS:
        return bool(PART_NAME.match(name))
    if folder == FIGURES:
        return name == EXAMPLES or name in figure_names
    return False


# ---------------------------------------------------------------------------------------------------- paths
def results_path(rundir: PathLike) -> Path:
    return Path(rundir) / RESULTS


def config_path(rundir: PathLike) -> Path:
    return Path(rundir) / CONFIG


def stamped_config_path(rundir: PathLike, stamp: str) -> Path:
    """Where ``sweep --force`` keeps the config it replaces (``stamp``: ``YYYYmmddTHHMMSS``)."""
    return Path(rundir) / f"config.{stamp}.yaml"


def dataset_path(rundir: PathLike) -> Path:
    return Path(rundir) / DATASET


def heartbeat_path(rundir: PathLike) -> Path:
    return Path(rundir) / HEARTBEAT


def lock_path(rundir: PathLike) -> Path:
    return Path(rundir) / LOCK


def log_path(rundir: PathLike) -> Path:
    """``RUNDIR/logs/sweep.log`` (the caller makes ``logs/`` with :func:`moirescale.fsio.real_dir`)."""
    return Path(rundir) / LOGS / SWEEP_LOG


def checkpoint_rel(run_id: str) -> str:
    """A network's checkpoint, relative to the run directory (what a results row records)."""
    return f"{CHECKPOINTS}/{run_id}.pt"


RESUME_SUFFIX = ".resume.pt"


def resume_state_path(folder: PathLike, first_run_id: str) -> Path:
    """A training state saved while a group of networks trains (:mod:`moirescale.train.resume`), named after
    the group's first run id; ``folder`` is ``RUNDIR/checkpoints`` in a run directory."""
    return Path(folder) / f"{first_run_id}{RESUME_SUFFIX}"


def saved_state_files(rundir: PathLike) -> list[Path]:
    """The training states in ``RUNDIR/checkpoints``, sorted (none when the folder is missing or a link)."""
    folder = Path(rundir) / CHECKPOINTS
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(folder.glob(f"*{RESUME_SUFFIX}"))


def discard_states(folder: PathLike, run_ids: list[str]) -> list[Path]:
    """Delete the training states named after ``run_ids`` in ``folder`` (nothing else); return those gone."""
    gone: list[Path] = []
    if Path(folder).is_symlink():  # never delete through a link planted at the folder's place
        return gone
    for rid in run_ids:
        p = resume_state_path(folder, rid)
        if p.is_file() and not p.is_symlink():
            p.unlink()
            gone.append(p)
    return gone


def fits_path(rundir: PathLike) -> Path:
    return Path(rundir) / FITS


def noise_path(rundir: PathLike) -> Path:
    return Path(rundir) / NOISE


def figures_dir(rundir: PathLike) -> Path:
    return Path(rundir) / FIGURES


def examples_path(rundir: PathLike) -> Path:
    """The example-images figure (the paper's Fig. 2) the demo draws."""
    return figures_dir(rundir) / EXAMPLES


def report_path(rundir: PathLike) -> Path:
    return Path(rundir) / REPORT


def marker_path(rundir: PathLike) -> Path:
    return Path(rundir) / DEMO_MARKER


def timing_path(rundir: PathLike) -> Path:
    return Path(rundir) / DEMO_TIMING


# -------------------------------------------------------------------------------------------- dataset.json
class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


_Side = Annotated[int, Field(strict=True, ge=1)]


class DatasetRecord(_Record):
    """``RUNDIR/dataset.json``: the store a sweep trained on, its split sizes, image shape, label names and
    config hash."""

    # Each key typed; a record of an older sweep may lack some (its config_hash still guards a resume).
    store: str | None = None
    splits: dict[Literal["train", "val", "test"], Annotated[int, Field(strict=True, ge=0)]] | None = None
    image_shape: Annotated[list[_Side], Field(min_length=3, max_length=3)] | None = None
    config_hash: str | None = None
    label_names: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None


def read_dataset(rundir: PathLike) -> dict[str, Any]:
    """``RUNDIR/dataset.json`` as a mapping; empty when it is missing, and a UserError when it is not, as a
    whole, the record a sweep writes."""
    path = dataset_path(rundir)
    if not os.path.lexists(path):
        return {}
    try:
        info = read_json(path, "dataset record", max_bytes=1 << 20)
        DatasetRecord.model_validate(info)
    except (UserError, ValidationError):
        raise UserError(f"{path} is not the dataset record a sweep writes; delete it (the next sweep "
                        "writes it again) or use another --out") from None
    return info


def write_dataset(rundir: PathLike, info: dict[str, Any]) -> Path:
    DatasetRecord.model_validate(info)
    return atomic_write(dataset_path(rundir), json.dumps(info, indent=2) + "\n")


def dataset_store(rundir: PathLike) -> str | None:
    """The store a sweep used, as ``RUNDIR/dataset.json`` records it (None when it does not)."""
    try:
        store = read_dataset(rundir).get("store")
    except UserError:
        return None
    return store if isinstance(store, str) and store else None


# ------------------------------------------------------------------------------------------ heartbeat.json
class _Job(_Record):
    grid: str
    run_ids: list[str]
    since: Annotated[float, Field(allow_inf_nan=False)]


class HeartbeatRecord(_Record):
    """``RUNDIR/heartbeat.json``: who runs the sweep and which jobs are in flight."""

    pid: Annotated[int, Field(strict=True, ge=0)]
    host: str
    executor: str
    workers: Annotated[int, Field(strict=True, ge=1)]
    started_at: AwareDatetime
    updated_unix: Annotated[float, Field(allow_inf_nan=False)]
    finished: bool
    queued: Annotated[int, Field(strict=True, ge=0)]
    running: list[_Job]


def write_heartbeat(rundir: PathLike, data: dict[str, Any]) -> Path:
    return atomic_write(heartbeat_path(rundir), json.dumps(data, indent=1) + "\n")


def read_heartbeat(rundir: PathLike) -> tuple[dict[str, Any], HeartbeatRecord] | None:
    """The heartbeat as written and as checked, or None when there is none or it is not, as a whole, the
    heartbeat a sweep writes."""
    try:
        raw = read_json(heartbeat_path(rundir), "sweep heartbeat", max_bytes=16 << 20)
        return raw, HeartbeatRecord.model_validate(raw)
    except (UserError, ValidationError):
        return None


# ------------------------------------------------------------------------------------------------ fits.json
def write_fits(rundir: PathLike, text: str) -> Path:
    """Write ``RUNDIR/fits.json`` (strict JSON text, :func:`moirescale.analysis.pipeline.fits_json`)."""
    return atomic_write(fits_path(rundir), text)


# Numbers as fits_json writes them: finite, null, or "inf"/"-inf" (strict JSON has no infinities).
_Num = Annotated[float, Field(strict=False)] | None
_Count = Annotated[int, Field(strict=True, ge=0)] | None


class FitEntry(BaseModel):
    """One curve's fit in ``fits.json``: the keys readers use, typed; the rest kept as written."""

    model_config = ConfigDict(extra="allow", frozen=True)

    arch: str
    target: str
    variable: str
    grid: str | None = None
    schedule: str | None = None
    n_layers: _Count = None
    width: _Count = None
    n_params: _Count = None
    n_points: _Count = None
    n_min: _Count = None
    n_max: _Count = None
    noise_train: _Num = None
    alpha: _Num = None
    alpha_lo: _Num = None
    alpha_hi: _Num = None


class CheckEntry(BaseModel):
    """One budget check of ``fits.json``'s ``convergence`` list (``convergence.convergence_table``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    grid: str
    arch: str | None = None
    target: str | None = None
    n_layers: _Count = None
    width: _Count = None
    n_train: _Count = None
    ratio: _Num = None
    flagged: bool


class FitsRecord(BaseModel):
    """``RUNDIR/fits.json`` as a whole: its fits and budget checks typed, the other sections lists of
    mappings, the settings a mapping."""

    model_config = ConfigDict(extra="allow", frozen=True)

    version: Annotated[int, Field(strict=True, ge=1)] | None = None
    settings: dict[str, Any] | None = None
    fits: list[FitEntry]
    convergence: list[CheckEntry] = []
    alpha_vs_size: list[dict[str, Any]] = []
    joint: list[dict[str, Any]] = []
    extrapolation: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []


def read_fits(path: PathLike, what: str = "fits file") -> dict[str, Any]:
    """A ``fits.json`` (``path``: the file, or the run directory holding it) as a mapping, validated as a
    whole (:class:`FitsRecord`: every fit's and budget check's keys typed); UserError naming it, and the
    first bad key, when it is missing or is not one."""
    p = Path(path)
    if p.suffix != ".json":
        p = fits_path(p)
    doc = read_json(p, what)
    if not isinstance(doc, dict) or not isinstance(doc.get("fits"), list):
        raise UserError(f"{p} is not a fits.json written by `moirescale fit` (no list of fits)")
    try:
        FitsRecord.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise UserError(f"{p} is not a fits.json written by `moirescale fit` ({loc}: {err['msg']}); run "
                        "`moirescale fit` on its run again") from None
    return doc
