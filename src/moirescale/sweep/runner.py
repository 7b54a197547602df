"""Run a sweep: prepare RUNDIR, make sure the dataset exists, run every job not yet done, resumably.

Resumability comes from three facts: run ids are deterministic (:mod:`moirescale.train.spec`), the results
table only grows by atomic part files (:mod:`moirescale.results`), and the driver appends a job's rows only
after the whole job finished. So a sweep killed at any moment (SIGKILL included) keeps every finished run,
and the same command run again skips those ids and redoes only the rest. A lock file keeps two sweeps off
one RUNDIR.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from moirescale import results
from moirescale import rundir as rd
from moirescale.errors import UserError
from moirescale.fsio import atomic_write, is_empty, open_nofollow, real_dir, remove_stale_temps
from moirescale.sweep.config import LoadedConfig, config_warnings, load_config
from moirescale.sweep.expand import describe_spec, jobs, spec_run_ids
from moirescale.sweep.plan import Plan, SweepOptions, check_store_size, no_store_error, plan, select_grids
from moirescale.sweep.worker import (
    DEFAULT_TRAIN_FN,
    failed_rows,
    format_error,
    format_traceback,
    now_iso,
)
from moirescale.train.spec import TrainSpec

HEARTBEAT_EVERY_S = 5.0
# What a directory may hold before a sweep adopts it: its lock, and the marker of `moirescale demo`.
STARTER_ENTRIES = frozenset({rd.LOCK, rd.DEMO_MARKER})
_SWEEP_TOP = frozenset({rd.CONFIG, rd.DATASET, rd.HEARTBEAT})
# The files a sweep's writers make, per folder of RUNDIR: only their temporary files are ever removed.
_OWN_NAMES: dict[str, Callable[[str], bool]] = {
    "": lambda n: n in _SWEEP_TOP or bool(rd.STAMPED_CONFIG.match(n)),
    rd.CHECKPOINTS: rd.CHECKPOINT_NAME.match,
    rd.RESULTS: rd.PART_NAME.match,
}

log = logging.getLogger("moirescale.sweep")


# ---------------------------------------------------------------------------------------------------- RUNDIR
def prepare_rundir(loaded: LoadedConfig, out: Path, force: bool = False) -> None:
    """Create RUNDIR and copy the config into ``RUNDIR/config.yaml``; refuse a RUNDIR made by another config.

    Two configs are the same when their parsed YAML is equal (comments and layout do not matter). ``force``
    keeps the old copy as ``config.<time>.yaml`` and adopts the new one: the rows already there stay valid,
    since a run id depends only on what defines the run.
    """
    out.mkdir(parents=True, exist_ok=True)
    dest = rd.config_path(out)
    if not dest.exists() and not is_empty(out, allowed=STARTER_ENTRIES):
        raise UserError(f"{out} is not empty and is not a sweep run directory; choose a new --out")
    if dest.exists():
        if _same_config(dest, loaded):
            return
        if not force:
            raise UserError(
                f"{out} holds a sweep of a different config ({dest}); use another --out, or --force to adopt "
                f"{loaded.path.name} there (finished runs are kept)"
            )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        atomic_write(rd.stamped_config_path(out, stamp), dest.read_bytes())
    atomic_write(dest, loaded.text)


def _acquire_lock(out: Path) -> Any:
    """An exclusive flock on RUNDIR/.sweep.lock (the OS drops it when the process dies, even by SIGKILL)."""
    try:
        fh = open_nofollow(rd.lock_path(out), "a+")  # held for the sweep's lifetime; never through a link
    except OSError as exc:
        raise UserError(f"cannot open the lock file {rd.lock_path(out)}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        who = fh.read().strip() or "another process"
        fh.close()
        raise UserError(f"another sweep is running on {out} ({who}); wait for it or stop it first") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    fh.flush()
    return fh


class _LogFile(logging.FileHandler):
    """The sweep's log file. A record that cannot be written (a full disk) is dropped: the log must not turn
    one clear error into tracebacks on stderr."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            super().flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()


def setup_logging(out: Path) -> logging.Handler:
    real_dir(out, rd.LOGS)  # a link planted at RUNDIR/logs is refused, not followed
    path = rd.log_path(out)
    handler = _LogFile(path, delay=True)
    handler.stream = open_nofollow(path)  # appended to, never through a link planted at its name
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


# ---------------------------------------------------------------------------------------------------- dataset
def ensure_dataset(loaded: LoadedConfig, out: Path, force: bool = False) -> dict[str, Any]:
    """Open the config's store (generating it first if it is missing or unfinished and the config says how);
    write ``RUNDIR/dataset.json``. Refuse a RUNDIR whose results came from a different dataset."""
    from moirescale.data.store import open_store

    path = loaded.store_path
    gen = loaded.cfg.dataset.generate
    try:
        store = open_store(path, checksum=False)
    except UserError as exc:
        if gen is None:
            raise no_store_error(exc) from None
        _generate(loaded, path)
        store = open_store(path, checksum=False)
    info = {
        "store": str(path),
        "splits": {s: store.split_len(s) for s in ("train", "val", "test")},
        "image_shape": list(store.image_shape),
        "label_names": list(store.label_names),
        "config_hash": store.manifest.get("config_hash"),
    }
    check_store_size(gen, info["splits"], path)
    if os.path.lexists(rd.dataset_path(out)):
        old = rd.read_dataset(out)
        if old.get("config_hash") != info["config_hash"] and not force:
            raise UserError(
                f"{out} holds results made on another dataset (config hash {old.get('config_hash')}, now "
                f"{info['config_hash']}); use another --out, or --force"
            )
    rd.write_dataset(out, info)
    return info


def _generate(loaded: LoadedConfig, path: Path) -> None:
    req = loaded.dataset_request()
    assert req is not None
    log.info("generating the dataset %s from %s (pool %s, val %s, test %s, seed %s)", path, req.config,
             req.pool, req.n_val, req.n_test, req.seed)
    print(f"generating the dataset into {path} ...", file=sys.stderr, flush=True)
    req.make()


# ------------------------------------------------------------------------------------------------ heartbeat
@dataclass
class Heartbeat:
    """``RUNDIR/heartbeat.json``: who runs the sweep and which jobs are in flight (read by ``status``)."""

    rundir: Path
    executor: str
    workers: int = 1
    grids: tuple[str, ...] = ()  # the sweep's --grid selection (empty: the whole config)
    started_at: str = field(default_factory=now_iso)
    last: float = 0.0

    def write(self, running: list[tuple[TrainSpec, float]], queued: int, final: bool = False) -> None:
        data = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "executor": self.executor,
            "workers": self.workers,
            "grids": list(self.grids),
            "started_at": self.started_at,
            "updated_at": now_iso(),
            "updated_unix": time.time(),
            "finished": final,
            "queued": queued,
            "running": [
                {"grid": s.grid, "run_ids": spec_run_ids(s), "since": since} for s, since in running
            ] if not final else [],
        }
        rd.write_heartbeat(self.rundir, data)
        self.last = time.monotonic()


# ---------------------------------------------------------------------------------------------------- driver
@dataclass
class SweepSummary:
    jobs: int = 0
    ok: int = 0
    diverged: int = 0
    failed: int = 0
    skipped: int = 0
    retries: int = 0
    wall_s: float = 0.0

    def line(self) -> str:
        return (
            f"{self.ok} ok, {self.diverged} diverged, {self.failed} failed, {self.skipped} already done "
            f"({self.jobs} jobs, {self.retries} retries, {self.wall_s:.0f} s)"
        )


def drive(
    executor: Any,
    todo: list[TrainSpec],
    the_plan: Plan,
    rundir: Path,
    retries: int,
    heartbeat: Heartbeat,
    max_in_flight: int,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> SweepSummary:
    """Run ``todo`` on ``executor`` with at most ``max_in_flight`` jobs at once; append rows after each job.

    A job that raises is resubmitted up to ``retries`` times, then recorded as ``failed`` with its error (its
    rows built from the grid point ``the_plan`` resolved).
    """
    summary = SweepSummary(jobs=len(todo))
    queue = list(reversed(todo))  # pop() from the end keeps the config's order
    attempts: dict[int, int] = {}
    inflight: dict[Any, tuple[int, TrainSpec, float]] = {}
    specs = dict(enumerate(todo))
    order = {id(s): i for i, s in specs.items()}
    t0 = time.monotonic()

    def beat() -> None:
        heartbeat.write([(s, since) for _, s, since in inflight.values()], queued=len(queue))

    while queue or inflight:
        while queue and len(inflight) < max_in_flight:
            spec = queue.pop()
            i = order[id(spec)]
            handle = executor.submit(spec)
            inflight[handle] = (i, spec, time.time())
            log.info("start %s %s", spec.grid, describe_spec(spec))
        beat()
        finished = executor.wait(list(inflight), timeout=HEARTBEAT_EVERY_S)
        for handle in finished:
            i, spec, since = inflight.pop(handle)
            try:
                rows = executor.result(handle)
            except Exception as exc:  # noqa: BLE001 - any failure of a job is recorded, the sweep goes on
                if _out_of_space(exc):  # not the job's fault: stop, keep what is done, resume later
                    raise UserError(
                        f"{describe_spec(spec)}: {format_error(exc)}; free some space and run the same "
                        "command again to resume"
                    ) from None
                attempts[i] = attempts.get(i, 0) + 1
                log.warning("job %s failed (attempt %d of %d): %s\n%s", describe_spec(spec), attempts[i],
                            retries + 1, format_error(exc), format_traceback(exc))
                if attempts[i] <= retries:
                    summary.retries += 1
                    queue.append(spec)  # retried next
                    continue
                rows = failed_rows(spec, the_plan.of(spec), format_error(exc),
                                   device=getattr(handle, "device", executor.name))
            results.append_rows(rundir, rows)
            if all(r.get("status") in ("ok", "diverged") for r in rows):  # recorded: the states can go
                discard_done_states(rundir, [r["run_id"] for r in rows])
            for r in rows:
                key = r.get("status", "failed")
                setattr(summary, key, getattr(summary, key) + 1)
            log.info("done %s %s: %s", spec.grid, describe_spec(spec),
                     ", ".join(f"{r['run_id']} {r['status']} test_mse={r.get('test_mse')}" for r in rows))
            if on_rows is not None:
                on_rows(rows)
    summary.wall_s = time.monotonic() - t0
    return summary


def longest_first(todo: list[TrainSpec], the_plan: Plan) -> list[TrainSpec]:
    """The jobs by the dry run's estimated CPU time, largest first (ties in the config's order): on K workers
    the last jobs to start are short ones, so a sweep whose cost sits in a few long jobs (a large model's
    largest N_D and its budget check) ends sooner than in the config's order (longest-processing-time
    scheduling)."""
    from moirescale.sweep.estimate import job_cost

    return sorted(todo, key=lambda s: -job_cost(the_plan.of(s), len(s.realizations)).cpu_s)


def saved_state_ids(rundir: Path) -> set[str]:
    """The run ids that name a training state in ``RUNDIR/checkpoints`` (each a group's first network)."""
    return {p.name.removesuffix(rd.RESUME_SUFFIX) for p in rd.saved_state_files(rundir)}


def discard_done_states(rundir: Path, run_ids: Iterable[str]) -> int:
    """Delete the training states of recorded runs (``RUNDIR/checkpoints/<run id>.resume.pt``; a failed
    job's stay, so that its retry resumes); return how many went."""
    run_ids = list(run_ids)
    if not run_ids or not (rundir / rd.CHECKPOINTS).is_dir():
        return 0
    return len(rd.discard_states(real_dir(rundir, rd.CHECKPOINTS, create=False), run_ids))


def _out_of_space(exc: BaseException) -> bool:
    """Whether a job failed because the disk is full, over quota or read-only (also inside a Ray error)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__
    return False


def run_sweep(
    config: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: SweepOptions | None = None,
    *,
    train_fn: str = DEFAULT_TRAIN_FN,
    progress: bool = True,
) -> SweepSummary:
    """Run (or resume) the sweep a config declares into ``out``. The Python face of ``moirescale sweep``.

    ``options`` are the command's options (:class:`~moirescale.sweep.plan.SweepOptions`; default: a local pool
    on every core); ``train_fn`` names the job's training function (tests replace it).
    """
    opts = options or SweepOptions()
    loaded, rundir, the_plan = preflight(config, out, opts)
    # What this run creates; a refusal before the first job removes it again (RUNDIR as it was found).
    created = [p for p in (rundir, rd.lock_path(rundir), rd.config_path(rundir), rd.log_path(rundir).parent,
                           rd.log_path(rundir), rd.dataset_path(rundir), rd.heartbeat_path(rundir))
               if not os.path.lexists(p)]
    lock, handler = _open_rundir(loaded, rundir, opts.force, created)
    started = refused = False
    try:
        log.info("sweep %s (%s) into %s, executor %s", loaded.cfg.name, loaded.path, rundir, opts.executor)
        info = ensure_dataset(loaded, rundir, force=opts.force)
        _warn_pool(loaded, info)
        _check_store(info, the_plan)
        for w in config_warnings(loaded.cfg):  # after every refusal: a refused run prints one line
            log.warning(w)
            print(f"warning: {w}", file=sys.stderr)
        done = results.done_ids(rundir)
        if n_stale := discard_done_states(rundir, saved_state_ids(rundir) & done):  # a kill after the rows
            log.info("removed %d training state(s) of runs already recorded", n_stale)  # and before this
        todo = jobs(loaded.cfg, done)
        if opts.longest_first:
            todo = longest_first(todo, the_plan)
        n_runs = sum(len(s.realizations) for s in todo)
        if not todo:
            which = f"grid(s) {', '.join(opts.grids)} of " if opts.grids else ""
            print(f"nothing to do: all runs of {which}{loaded.cfg.name} are in {results.table_path(rundir)}")
            Heartbeat(rundir, opts.executor).write([], 0, final=True)
            return SweepSummary(skipped=len(done))
        ex, max_in_flight, hb_workers = _executor(opts, loaded, info, rundir, train_fn)
        msg = (f"{loaded.cfg.name}: {len(todo)} jobs ({n_runs} networks) to run, {len(done)} runs already "
               f"done; {ex.describe()}; log: {rd.log_path(rundir)}")
        log.info(msg)
        print(msg, flush=True)
        hb = Heartbeat(rundir, opts.executor, workers=hb_workers, grids=opts.grids)
        started = True
        summary = _drive_then_close(ex, todo, the_plan, rundir, opts.retries, hb, max_in_flight,
                                    _progress(n_runs, progress))
        hb.write([], 0, final=True)
        summary.skipped = len(done)
        log.info("sweep finished: %s", summary.line())
        print(f"sweep finished: {summary.line()}; results: {results.table_path(rundir)}", flush=True)
        return summary
    except UserError:
        refused = not started
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
        lock.close()
        if refused:
            _undo(created)


def _open_rundir(
    loaded: LoadedConfig, rundir: Path, force: bool, created: list[Path]
) -> tuple[Any, logging.Handler]:
    """Create and lock RUNDIR, write its config, clear what killed runs left, open its log: the lock and the
    log handler. A refusal undoes ``created`` (what this run created)."""
    rundir.mkdir(parents=True, exist_ok=True)
    lock = _acquire_lock(rundir)
    try:
        prepare_rundir(loaded, rundir, force=force)
        for sub, finals in _OWN_NAMES.items():  # what killed runs left, by exact names (an hour old: no
            if not sub or os.path.lexists(rundir / sub):  # live writer's); a link planted there is refused
                remove_stale_temps(real_dir(rundir, sub, create=False) if sub else rundir, finals)
        return lock, setup_logging(rundir)
    except BaseException as exc:
        lock.close()
        if isinstance(exc, UserError):
            _undo(created)
        raise


def _check_store(info: dict[str, Any], the_plan: Plan) -> None:
    """Refuse a store that is not the one the plan was made for (image shape, label names)."""
    if tuple(info["image_shape"]) != tuple(the_plan.facts.image_shape):
        raise UserError(f"{info['store']}: images of shape {tuple(info['image_shape'])}, planned for "
                        f"{tuple(the_plan.facts.image_shape)}; run the sweep again")
    if tuple(info["label_names"]) != tuple(the_plan.facts.label_names):
        raise UserError(f"{info['store']}: labels {', '.join(info['label_names'])}, planned for "
                        f"{', '.join(the_plan.facts.label_names)}; run the sweep again")


def _executor(
    opts: SweepOptions, loaded: LoadedConfig, info: dict[str, Any], rundir: Path, train_fn: str
) -> tuple[Any, int, int]:
    """The executor the options name, how many jobs to keep in flight on it, and its worker count."""
    if opts.executor == "ray":
        from moirescale.sweep.executors import RayExecutor

        res = {g.name: g.resources.model_dump() for g in loaded.cfg.grids}
        cluster = RayExecutor(str(info["store"]), str(rundir), address=opts.address, workers=opts.workers,
                              train_fn=train_fn, resources=res)
        # twice the cluster's job slots: keep Ray's queue fed
        return cluster, max(1, int(cluster.n_cpu) + int(4 * cluster.n_gpu)) * 2, max(1, int(cluster.n_cpu))
    from moirescale.sweep.executors import LocalExecutor

    pool = LocalExecutor(str(info["store"]), str(rundir), workers=opts.workers, device=opts.device,
                         train_fn=train_fn)
    return pool, pool.workers, pool.workers


def _drive_then_close(
    ex: Any, todo: list[TrainSpec], the_plan: Plan, rundir: Path, retries: int, hb: Heartbeat,
    max_in_flight: int, bar_and_rows: tuple[Any, Callable[[list[dict[str, Any]]], None] | None],
) -> SweepSummary:
    """:func:`drive`, then close the executor: its jobs are killed on a full disk or Ctrl-C (exit 130)."""
    bar, on_rows = bar_and_rows
    killed = False
    try:
        return drive(ex, todo, the_plan, rundir, retries, hb, max_in_flight, on_rows)
    except (UserError, OSError):
        killed = True  # a full disk: stop the jobs in flight now, they cannot write either
        raise
    except KeyboardInterrupt:
        killed = True
        log.warning("interrupted; run the same command again to resume")
        print(f"interrupted: finished runs are kept in {rundir}; run the same command again to resume",
              file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if bar is not None:
            bar.stop()
        ex.close(kill=killed)


def _undo(created: list[Path]) -> None:
    """Remove what a refused run created (files, then emptied folders; never a link's target)."""
    for p in reversed(created):
        try:
            if p.is_dir() and not p.is_symlink():
                p.rmdir()  # only when empty: anything else in it was not ours
            else:
                p.unlink(missing_ok=True)
        except OSError:
            pass


def preflight(
    config: str | os.PathLike[str], out: str | os.PathLike[str], options: SweepOptions | None = None
) -> tuple[LoadedConfig, Path, Plan]:
    """Every check of a sweep that needs nothing written: options, config, RUNDIR, dataset and grid points
    (each resolved once: the returned :class:`~moirescale.sweep.plan.Plan`).

    ``--dry-run`` runs exactly this, so it accepts what the run accepts (issue 11).
    """
    opts = options or SweepOptions()
    loaded = select_grids(load_config(config), opts.grids)
    try:
        rundir = Path(out).resolve()
        os.stat(rundir) if os.path.lexists(rundir) else None
    except (OSError, RuntimeError) as exc:  # a link loop as --out
        raise UserError(f"--out {out} cannot be used: {getattr(exc, 'strerror', None) or exc}") from None
    if rundir.exists() and not rundir.is_dir():
        raise UserError(f"--out {rundir} is a file, not a directory")
    if rundir.is_dir():
        dest = rd.config_path(rundir)
        if not dest.exists() and not is_empty(rundir, allowed=STARTER_ENTRIES):
            # any entry but a sweep's lock or the demo's marker (dotfiles too) makes a folder someone else's
            raise UserError(f"{rundir} is not empty and is not a sweep run directory; choose a new --out")
        if dest.exists() and not opts.force and not _same_config(dest, loaded):
            raise UserError(
                f"{rundir} holds a sweep of a different config ({dest}); use another --out, or --force to "
                f"adopt {loaded.path.name} there (finished runs are kept)"
            )
        if os.path.lexists(rd.dataset_path(rundir)):
            rd.read_dataset(rundir)  # a damaged dataset record is refused now, as the run would refuse it
    results.check_appendable(rundir)
    return loaded, rundir, plan(loaded, opts.executor)


def _same_config(dest: Path, loaded: LoadedConfig) -> bool:
    try:
        return yaml.safe_load(dest.read_text()) == loaded.raw
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False


def _warn_pool(loaded: LoadedConfig, info: dict[str, Any]) -> None:
    pool = info["splits"]["train"]
    for g in loaded.cfg.grids:
        big = [n for n in g.n_train.sizes() if n > pool]
        if big:
            msg = f"grid {g.name}: N_D {big} exceed the training pool ({pool}); those runs will fail"
            log.warning(msg)
            print(f"warning: {msg}", file=sys.stderr)


def _progress(total: int, enabled: bool) -> tuple[Any, Callable[[list[dict[str, Any]]], None] | None]:
    if not enabled:
        return None, None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("networks"),
                   TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
    task = bar.add_task("sweep", total=total)
    bar.start()

    def on_rows(rows: list[dict[str, Any]]) -> None:
        bar.advance(task, len(rows))

    return bar, on_rows
