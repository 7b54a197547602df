"""``moirescale status RUNDIR`` and ``--dry-run``: per-grid counts, compute estimates, throughput and ETA.

A run is *done* when its latest row is ok or diverged, *failed* when it is failed, *running* when a live
sweep's heartbeat lists it (the heartbeat is fresh and not marked finished), *pending* otherwise. A run that
two grids share counts in both. Estimates read each unique grid point resolved once (the sweep's
:class:`~moirescale.sweep.plan.Plan`, or :func:`~moirescale.sweep.plan.resolve_points` here).
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from moirescale import results
from moirescale import rundir as rd
from moirescale.errors import UserError
from moirescale.sweep.config import LoadedConfig, load_config
from moirescale.sweep.estimate import DEFAULT_IMAGE, RATES, human_time, job_cost
from moirescale.sweep.expand import (
    default_group_size,
    describe_spec,
    grid_points,
    grid_run_ids,
    jobs,
    spec_run_ids,
    unique_points,
)
from moirescale.sweep.plan import grid_choice_problem, resolve_points, select_grids
from moirescale.train.spec import group_id

if TYPE_CHECKING:
    from moirescale.sweep.plan import Plan

STALE_AFTER_S = 60.0  # a heartbeat older than this belongs to a sweep that is gone


def read_heartbeat(rundir: Path) -> dict[str, Any] | None:
    """The live sweep's heartbeat, or None when there is none (never run, finished, or killed) or when the
    file is not, as a whole, the heartbeat a sweep writes (:func:`moirescale.rundir.read_heartbeat`)."""
    got = rd.read_heartbeat(rundir)
    if got is None:
        return None
    raw, hb = got
    if hb.finished or time.time() - hb.updated_unix > STALE_AFTER_S:
        return None
    return {**raw, "started_at": hb.started_at.isoformat()}


def _label_names(rundir: Path | None) -> tuple[str, ...] | None:
    """The store's label names as ``RUNDIR/dataset.json`` records them (None: not recorded, e.g. before
    the first job; then targets resolve as :func:`moirescale.train.resolve.label_columns` says)."""
    names = rd.read_dataset(rundir).get("label_names") if rundir is not None else None
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def _image_shape(rundir: Path | None, loaded: LoadedConfig | None) -> tuple[int, ...]:
    if rundir is not None:
        shape = rd.read_dataset(rundir).get("image_shape")
        if isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) for v in shape):
            return tuple(shape)
    if loaded is not None:
        try:
            from moirescale.data.store import open_store

            return tuple(open_store(loaded.store_path, checksum=False).image_shape)
        except UserError:  # no store yet: the image its dataset config will make
            pass
        req = loaded.dataset_request()
        if req is not None and req.config.is_file():
            from moirescale.data.config import load_config as load_dataset_config
            from moirescale.data.config import resolve_physics

            _, _, image, _ = resolve_physics(load_dataset_config(req.config, req.overrides())[0])
            return (len(image.channels), image.size_px, image.size_px)
    return DEFAULT_IMAGE


def dry_run_table(loaded: LoadedConfig, rundir: Path | None = None, plan: Plan | None = None) -> Table:
    """One row per grid: points, networks, jobs, parameters, FLOPs and time on 2 CPU cores and one GPU.

    ``plan``: the checked sweep (``preflight``), whose resolved grid points the estimates read; without it
    each unique point is resolved here, once, for the image shape of the run directory or the store.
    """
    cfg = loaded.cfg
    shape = plan.facts.image_shape if plan is not None else _image_shape(rundir, loaded)
    resolved = plan.resolved if plan is not None else resolve_points(
        unique_points(cfg), shape, label_names=_label_names(rundir)
    )
    done = results.done_ids(rundir) if rundir is not None and results.table_path(rundir).exists() else set()
    t = Table(title=f"sweep {cfg.name}: image {tuple(shape)}, {len(done)} runs already done")
    for col in ("grid", "arch", "points", "networks", "todo", "N_M range", "PFLOP", "2 CPU cores", "1 GPU"):
        t.add_column(col, justify="left" if col in ("grid", "arch") else "right")
    for grid in cfg.grids:
        pts = grid_points(cfg, grid)
        nets = sum(len(p.realizations) for p in pts)
        todo_specs = []
        for p in pts:  # this grid's own view (shared runs are counted in each grid; the total dedupes)
            left = tuple(r for r, rid in zip(p.realizations, spec_run_ids(p), strict=True) if rid not in done)
            if left:
                g = default_group_size(grid)
                todo_specs += [replace(p, realizations=left[i : i + g]) for i in range(0, len(left), g)]
        costs = [job_cost(resolved[group_id(s)], len(s.realizations)) for s in todo_specs]
        nm = [resolved[group_id(p)].n_params for p in pts]
        t.add_row(grid.name, grid.model.arch, str(len(pts)), str(nets),
                  str(sum(len(s.realizations) for s in todo_specs)), f"{min(nm):.2g}–{max(nm):.2g}",
                  f"{sum(c.flops for c in costs) / 1e15:.3g}", human_time(sum(c.cpu_s for c in costs)),
                  human_time(sum(c.gpu_s for c in costs)))
    # The total trains each shared network once.
    uniq = unique_points(cfg)
    todo = jobs(cfg, done)
    costs = [job_cost(resolved[group_id(s)], len(s.realizations)) for s in todo]
    t.add_section()
    t.add_row("all (unique)", "", str(len(uniq)), str(sum(len(p.spec.realizations) for p in uniq)),
              str(sum(len(s.realizations) for s in todo)), "", f"{sum(c.flops for c in costs) / 1e15:.3g}",
              human_time(sum(c.cpu_s for c in costs)), human_time(sum(c.gpu_s for c in costs)))
    t.caption = (f"{len(todo)} jobs to run. Time = FLOPs (schedule step budget, an upper bound) / effective "
                 "rate (docs/sweeps.md); divide the GPU column by the number of GPUs.")
    return t


def grid_status(rundir: Path) -> tuple[LoadedConfig, pd.DataFrame, dict[str, Any] | None]:
    """Per grid: total, done, running, failed, pending run counts (a DataFrame), plus the live heartbeat."""
    cfgp = rd.config_path(rundir)
    if not cfgp.is_file():
        raise UserError(f"{rundir} is not a sweep run directory (no {rd.CONFIG}); start one with "
                        "`moirescale sweep`")
    loaded = load_config(cfgp)
    df = results.read_results(rundir)
    status = dict(zip(df["run_id"], df["status"], strict=True))
    hb = read_heartbeat(rundir)
    running = {rid for job in (hb or {}).get("running", []) for rid in job["run_ids"]}
    rows = []
    for grid, ids in zip(loaded.cfg.grids, grid_run_ids(loaded.cfg).values(), strict=True):
        st = [status.get(i) for i in ids]
        n_done = sum(s in ("ok", "diverged") for s in st)
        n_div = sum(s == "diverged" for s in st)
        n_failed = sum(s == "failed" for s in st)
        n_run = sum(1 for i, s in zip(ids, st, strict=True) if s not in ("ok", "diverged") and i in running)
        rows.append({"grid": grid.name, "arch": grid.model.arch, "total": len(ids), "done": n_done,
                     "diverged": n_div, "failed": n_failed, "running": n_run,
                     "pending": len(ids) - n_done - n_failed - n_run})
    return loaded, pd.DataFrame(rows), hb


def status_report(rundir: Path, console: Console | None = None) -> pd.DataFrame:
    """Print the status table, throughput and ETA of a run directory; return the per-grid counts (per grid
    point for a ``moirescale train`` directory, which has no config: :func:`train_status`)."""
    console = console or Console()
    if not rd.config_path(rundir).is_file() and (results.table_path(rundir).is_dir()
                                                 or (rundir / rd.CHECKPOINTS).is_dir()):
        return train_status(rundir, console)
    loaded, counts, hb = grid_status(rundir)
    t = Table(title=f"sweep {loaded.cfg.name} in {rundir}")
    for col in ("grid", "arch", "total", "done", "running", "failed", "pending", "diverged"):
        t.add_column(col, justify="left" if col in ("grid", "arch") else "right")
    for r in counts.itertuples():
        t.add_row(r.grid, r.arch, str(r.total), f"[green]{r.done}[/]", f"[cyan]{r.running}[/]",
                  f"[red]{r.failed}[/]" if r.failed else "0", str(r.pending), str(r.diverged))
    console.print(t)
    df = results.read_results(rundir)
    uniq = {rid for p in unique_points(loaded.cfg) for rid in p.run_ids()}
    st = df[df["run_id"].isin(uniq)]
    n_done = int(st["status"].isin(["ok", "diverged"]).sum())
    console.print(f"unique runs: {n_done} done, {int((st['status'] == 'failed').sum())} failed, "
                  f"{len(uniq) - n_done} to do (of {len(uniq)})")
    if hb is not None:
        live = _live_grids(loaded, hb)
        only = f", grids {', '.join(live)} only" if live else ""
        console.print(f"live sweep: pid {hb['pid']} on {hb['host']} ({hb['executor']}), started "
                      f"{hb['started_at']}{only}, {len(hb.get('running', []))} job(s) in flight, "
                      f"{hb.get('queued', 0)} queued")
    else:
        console.print("no live sweep (not running, finished, or killed: rerun `moirescale sweep` to resume)")
    for line in saved_states(rundir, loaded):
        console.print(line, markup=False)  # "fcn[n_layers=3,width=512]" is not a style tag
    _throughput(rundir, loaded, df, hb, console)
    failed = st[st["status"] == "failed"]
    if len(failed):
        console.print(f"[red]{len(failed)} failed run(s)[/]; first error: {failed['error'].iloc[0]}")
    return counts


def train_status(rundir: Path, console: Console) -> pd.DataFrame:
    """The status of a ``moirescale train`` run directory: one row per grid point trained into it (networks
    ok / failed / diverged, geometric-mean test MSE) and its saved training states (a rerun of the same
    ``train`` command continues each). Returns the table's rows."""
    from moirescale.models import model_label
    from moirescale.stats import geomean

    df = results.read_results(rundir)
    rows = []
    for gid, g in df.groupby("group_id", sort=False):
        r = g.iloc[0]
        ok = g[g["status"] == "ok"]
        rows.append({"point": str(gid), "model": model_label(r["arch"], r["n_layers"], r["width"]),
                     "target": str(r["target"]),
                     "n_train": int(r["n_train"]), "ok": len(ok),
                     "failed": int((g["status"] == "failed").sum()),
                     "diverged": int((g["status"] == "diverged").sum()), "steps": float(ok["steps"].mean()),
                     "gm_test_mse": geomean(ok["test_mse"])})
    t = Table(title=f"`moirescale train` runs in {rundir}")
    cols = ("point", "model", "target", "N_D", "ok", "failed", "diverged", "steps (mean)", "test MSE (gm)")
    for col in cols:
        t.add_column(col, justify="left" if col in ("point", "model", "target") else "right")
    for r in rows:
        t.add_row(r["point"], r["model"], r["target"], str(r["n_train"]), f"[green]{r['ok']}[/]",
                  f"[red]{r['failed']}[/]" if r["failed"] else "0", str(r["diverged"]), f"{r['steps']:.0f}",
                  f"{r['gm_test_mse']:.4g}")
    console.print(t)
    for line in saved_states(rundir, None):
        console.print(line, markup=False)
    return pd.DataFrame(rows)


def saved_states(rundir: Path, loaded: LoadedConfig | None) -> list[str]:
    """One line per training state in ``RUNDIR/checkpoints`` (:mod:`moirescale.train.resume`): a job in flight
    or killed, how far it got and when it last saved. A rerun of the sweep (or of the ``train`` command, for
    ``loaded`` None: named by its run ids) continues each from there."""
    files = rd.saved_state_files(rundir)
    if not files:
        return []
    from moirescale.train.resume import read_progress  # imports torch: only when there is a state to read

    runs = {rid: (p.spec, r) for p in (unique_points(loaded.cfg) if loaded else [])
            for r, rid in zip(p.spec.realizations, spec_run_ids(p.spec), strict=True)}
    lines = []
    for f in files:
        prog = read_progress(f)
        if prog is None or not prog["run_ids"]:
            continue
        known = [runs[rid] for rid in prog["run_ids"] if rid in runs]
        if known and len(known) == len(prog["run_ids"]):
            spec = replace(known[0][0], realizations=tuple(r for _, r in known))
            what = f"{spec.grid} {describe_spec(spec)}"
        elif loaded is None:
            ids = prog["run_ids"]
            what = ids[0] + (f" and {len(ids) - 1} more networks" if len(ids) > 1 else "")
        else:
            what = f"{f.name} (not a point of this config)"
        lines.append(f"saved state: {what}: step {prog['step']} of at most {prog['budget']}, "
                     f"{prog['active']} of {prog['networks']} networks training, saved "
                     f"{human_time(prog['age_s'])} ago{_time_left(prog)}")
    return lines


def _time_left(prog: dict[str, Any]) -> str:
    """``, then at most ~T to go at R steps/s``: at the save, from its steps and training time (the budget is
    an upper bound: early stopping may end the job sooner); empty when the rate is not known."""
    if prog["active"] == 0 or prog["step"] <= 0 or prog["wall_s"] <= 0:
        return ""
    rate = prog["step"] / prog["wall_s"]
    return f", then at most ~{human_time((prog['budget'] - prog['step']) / rate)} to go at {rate:.2g} steps/s"


def _throughput(rundir: Path, loaded: LoadedConfig, df: pd.DataFrame, hb: dict[str, Any] | None,
                console: Console) -> None:
    """Networks per hour of the live (or last) session, and the ETA of what is left.

    The ETA weighs what is left by its estimated FLOPs, at the FLOP rate each family achieved so far (its
    networks' estimated FLOPs over their jobs' wall time), times the number of parallel workers; a family with
    no finished network yet uses the documented rate of :data:`~moirescale.sweep.estimate.RATES`. So a few big
    ResNets left at the end are not mistaken for a few tiny FCNs.
    """
    fin = df.dropna(subset=["finished_at"])
    if fin.empty:
        return
    times = pd.to_datetime(fin["finished_at"], utc=True, errors="coerce")
    if hb:  # the live session
        start = pd.to_datetime(hb["started_at"], utc=True)
        now = pd.Timestamp(datetime.now().astimezone())
    else:  # all rows: from the first network's start to the last one's end
        start = (times - pd.to_timedelta(fin["wall_time_s"].fillna(0).to_numpy(), unit="s")).min()
        now = times.max()
    recent = fin[times >= start]
    elapsed = max(1.0, (now - start).total_seconds())
    if recent.empty:
        return
    rate = len(recent) / elapsed * 3600
    resolved = resolve_points(
        unique_points(loaded.cfg), _image_shape(rundir, None), label_names=_label_names(rundir)
    )
    live = _live_grids(loaded, hb)  # a live `sweep --grid` runs only those: its ETA is theirs
    left = jobs(select_grids(loaded, live).cfg, results.done_ids(rundir))
    # Per family: estimated FLOPs done / wall seconds of the jobs that did them. A row's wall_time_s is its
    # share of its job (the job's time / its ensemble size), so a job's rows together add up to its time.
    flops: dict[str, float] = {}
    secs: dict[str, float] = {}
    ok = fin[fin["status"].isin(["ok", "diverged"])]
    for (gid, wall), rows in ok.groupby(["group_id", "wall_time_s"]):
        rs = resolved.get(gid)
        if rs is None or not wall > 0:
            continue
        arch = rs.spec.arch
        flops[arch] = flops.get(arch, 0.0) + job_cost(rs, len(rows)).flops
        secs[arch] = secs.get(arch, 0.0) + float(wall) * len(rows)
    workers = max(1, int((hb or {}).get("workers") or 1))
    eta = 0.0
    for s in left:
        per_worker = flops[s.arch] / secs[s.arch] if secs.get(s.arch) else RATES["cpu2"][s.arch] / workers
        eta += job_cost(resolved[group_id(s)], len(s.realizations)).flops / (per_worker * workers)
    n_left = sum(len(s.realizations) for s in left)
    tail = human_time(eta) if hb else f"- (no live sweep; with {workers} worker(s): {human_time(eta)})"
    which = f" of grids {', '.join(live)}" if live else ""
    console.print(f"throughput: {rate:.1f} networks/h over {human_time(elapsed)}; "
                  f"ETA for {n_left} networks{which}: {tail}")


def _live_grids(loaded: LoadedConfig, hb: dict[str, Any] | None) -> list[str]:
    """The grids (or ``GRID:TARGET``) a live sweep was started with (``--grid``) that the config still has;
    empty: all."""
    names = (hb or {}).get("grids") or []
    return [g for g in names if isinstance(g, str) and grid_choice_problem(loaded.cfg, g) is None]
