"""CLI: ``moirescale train`` (one grid point, N_r realizations, rows appended to RUNDIR/results.parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from moirescale import rundir as rd
from moirescale.errors import UserError, split_option
from moirescale.limits import MAX_REALIZATIONS

if TYPE_CHECKING:
    from moirescale.train.resolve import ResolvedSpec


def _parse_opts(items: list[str] | None) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items or []:
        key, val = split_option(item, "--schedule-opt", "KEY=VALUE", "min_epochs=40")
        try:
            out[key] = int(val)
        except ValueError:
            try:
                out[key] = float(val)
            except ValueError:
                raise UserError(f"--schedule-opt {key}: {val!r} is not a number") from None
    return out


def train(
    data: Path = typer.Option(..., "--data", help="dataset store directory"),
    out: Path = typer.Option(..., "--out", help=f"run directory ({rd.RESULTS}, {rd.CHECKPOINTS}/)"),
    model: str = typer.Option(
        "fcn", "--model", "--arch", help="fcn, resnet18, vit, or features (physics features + ridge)"
    ),
    n_layers: int | None = typer.Option(None, "--n-layers", help="FCN hidden layers / ViT depth"),
    width: int | None = typer.Option(None, "--width", help="FCN neurons / ResNet base width / ViT embed dim"),
    heads: int | None = typer.Option(None, "--heads", help="ViT attention heads"),
    patch: int | None = typer.Option(None, "--patch", help="ViT patch size"),
    target: str = typer.Option(
        None, "--target", help="a label name of the store (theta, J, D when simulated) or all; default: J, "
        "or the first label of an imported store",
    ),
    n_train: int = typer.Option(..., "--n-train", help="N_D: training subset size"),
    realizations: int = typer.Option(1, "--realizations", help="N_r: independently initialised networks"),
    first_realization: int = typer.Option(0, "--first-realization", help="index of the first realization"),
    schedule: str = typer.Option("adjustable", "--schedule", help="constant, cosine, plateau, adjustable"),
    schedule_opt: list[str] | None = typer.Option(
        None, "--schedule-opt", help="KEY=VALUE, e.g. min_steps=500"
    ),
    lr: float = typer.Option(1e-3, "--lr", help="starting learning rate"),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam or adamw"),
    weight_decay: float = typer.Option(0.0, "--weight-decay"),
    batch_size: int = typer.Option(64, "--batch-size"),
    max_epochs: int | None = typer.Option(None, "--max-epochs", help="fix the budget in epochs"),
    channels: str = typer.Option(
        None, "--channels",
        help="channel names of the store, comma-separated: top (the paper's images; the default), bottom, "
        "net, afm; both = top,bottom; an imported store's gray or c0,c1,... (default: all of them)",
    ),
    seed: int = typer.Option(0, "--seed"),
    shared_data: bool = typer.Option(
        False,
        "--shared-data/--own-data",
        help="own (default): each realization its own subset and order; shared: one for all (benchmarks)",
    ),
    noise: float = typer.Option(0.0, "--noise", help="sigma of Gaussian input noise while training"),
    precision: str = typer.Option(
        "fp32", "--precision",
        help="fp32; bf16 (mixed precision: bf16 matmuls, fp32 weights, loss and test MSE); tf32 (CUDA only)",
    ),
    checkpoints: str = typer.Option("all", "--checkpoints", help="all, best or none"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the estimated cost, write nothing"),
    resume_every: float | None = typer.Option(
        None, "--resume-every", help="seconds between saves of the training state (default 600): the same "
        "command after a kill continues from the last one; 0 saves at every validation",
    ),
) -> None:
    """Train N_r realizations of one model on N_D samples and append one row per network to the run table."""
    from moirescale.results import append_rows
    from moirescale.rundir import CHECKPOINTS
    from moirescale.train.run import discard_resume, run_spec
    from moirescale.train.spec import TrainSpec

    _check_args(data, out, realizations, first_realization, resume_every)
    target, channels = _store_defaults(data, target, channels)
    kw = {"n_layers": n_layers, "width": width, "heads": heads, "patch": patch}
    spec = TrainSpec(
        arch=model,
        target=target,
        n_train=n_train,
        realizations=tuple(range(first_realization, first_realization + realizations)),
        model_kw={k: v for k, v in kw.items() if v is not None},
        seed=seed,
        schedule=schedule,
        schedule_kw=_parse_opts(schedule_opt),
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        max_epochs=max_epochs,
        channels=channels,
        shared_data=shared_data,
        noise_train=noise,
        precision=precision,
    )
    from moirescale.train.precision import check_precision
    from moirescale.train.run import resolve_device

    check_precision(precision, resolve_device(device))  # tf32 on a CPU: refused before anything is read
    _refuse_other_precision(spec, out)
    from moirescale.train.run import resolve_on_store

    on_store = resolve_on_store(spec, data)  # resolved once: for the estimate and for training
    typer.echo(_estimate_line(on_store[0]))  # before a long run, how long it may take (issue 29)
    if dry_run:
        return
    every = {} if resume_every is None else {"resume_every": resume_every}
    rows = run_spec(spec, data, out, device=device, progress=progress, checkpoints=checkpoints,
                    on_store=on_store, keep_states=True, **every)
    append_rows(out, rows)
    discard_resume(spec, out / CHECKPOINTS)  # recorded: a rerun would not need the states
    typer.echo(_summary_line(rows, out))


def _check_args(
    data: Path, out: Path, realizations: int, first_realization: int, resume_every: float | None
) -> None:
    """What ``train`` refuses before it reads anything (one line each, exit 2)."""
    from moirescale.results import check_appendable

    if not data.is_dir():
        raise UserError(f"--data {data}: no such dataset store directory")
    if not 1 <= realizations <= MAX_REALIZATIONS:
        raise UserError(f"--realizations must be between 1 and {MAX_REALIZATIONS}, got {realizations}")
    if resume_every is not None and not 0 <= resume_every < float("inf"):
        raise UserError(f"--resume-every must be a number of seconds >= 0, got {resume_every}")
    if not 0 <= first_realization < 10**6:
        raise UserError(f"--first-realization must be in [0, 10^6), got {first_realization}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    _refuse_store_as_out(data, out)
    check_appendable(out)


def _summary_line(rows: list[dict], out: Path) -> str:
    """One line: the networks trained, how many diverged, N_M and the geometric-mean test MSE."""
    from moirescale.stats import geomean

    ok = [r["test_mse"] for r in rows if r["status"] == "ok"]
    n_div = sum(r["status"] == "diverged" for r in rows)
    return (f"{len(rows)} networks ({len(ok)} ok, {n_div} diverged), N_M={rows[0]['n_params']}, "
            f"geometric-mean test MSE {geomean(ok):.4g} -> {rd.results_path(out)}")


def _estimate_line(rs: ResolvedSpec) -> str:
    """One line: the point's networks, FLOPs and estimated time on 2 CPU cores and one GPU (the sweep's cost
    model, docs/sweeps.md; an upper bound: the schedule's full step budget)."""
    from moirescale.sweep.estimate import human_time, job_cost

    cost = job_cost(rs)
    return (f"estimate: {len(rs.spec.realizations)} networks, {cost.flops / 1e12:.3g} TFLOP, at most "
            f"{human_time(cost.cpu_s)} on 2 CPU cores or {human_time(cost.gpu_s)} on one GPU")


def _store_defaults(data: Path, target: str | None, channels: str | None) -> tuple[str, str]:
    """``--target`` and ``--channels`` when not given: J and top for a simulated store; an imported store's
    first label and all its channels."""
    if target is not None and channels is not None:
        return target, channels
    from moirescale.data.store import read_manifest
    from moirescale.labels import LABELS, store_label_names

    m = read_manifest(data)
    names = store_label_names(m)
    stored = list(m.get("image_channels") or ["top", "bottom"])
    if target is None:
        target = "J" if names == LABELS else names[0]
    if channels is None:
        channels = "top" if "top" in stored else ",".join(stored)
    return target, channels


def _refuse_store_as_out(data: Path, out: Path) -> None:
    """A run directory is never a dataset store: refuse ``--out`` that is the store, lies inside it, or holds
    a store's manifest (results and checkpoints written there would sit among the shards)."""
    from moirescale.data.store import MANIFEST

    d, o = data.resolve(), out.resolve()
    if o == d or d in o.parents or (o / MANIFEST).exists():
        raise UserError(f"--out {out} is a dataset store or lies inside one; choose a run directory of its "
                        "own")


def _refuse_other_precision(spec, out: Path) -> None:
    """One curve, one precision: refuse adding ``spec`` to a run directory that holds the same grid point
    trained at another precision (its rows would be averaged with these)."""
    from moirescale.results import read_results
    from moirescale.train.spec import precision_twins

    if not out.is_dir():
        return
    held = set(read_results(out)["group_id"].dropna())
    for precision, gid in precision_twins(spec).items():
        if gid in held:
            raise UserError(
                f"{out} already holds this grid point trained in {precision}; resuming it in "
                f"{spec.precision} would mix precisions in one curve: use another --out"
            )


def register(app: typer.Typer) -> None:
    """Add this package's commands to the main app."""
    app.command("train")(train)
