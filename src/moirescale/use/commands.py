"""CLI sub-commands of this package (registered by moirescale.cli): predict, noise, errors, demo."""

from __future__ import annotations

from pathlib import Path

import typer

from moirescale import rundir as rd


def _floats(text: str, what: str) -> list[float]:
    from moirescale.errors import UserError

    if not text.strip():
        return []
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what}: give comma-separated numbers, e.g. 0.05,0.1, got {text!r}") from None


def predict(
    rundir: Path = typer.Argument(
        ..., help=f"Run directory of a sweep ({rd.RESULTS} + {rd.CHECKPOINTS}/)."
    ),
    image: str = typer.Argument(
        ..., help="Image: .npy ((H,W) one channel, a simulated store's top layer, or (C,H,W)), a picture "
        "(.png), or STORE_DIR::split:index."
    ),
    arch: str | None = typer.Option(None, help="Use only this architecture (fcn, resnet18, vit)."),
    width: int | None = typer.Option(None, help="Use only networks of this width."),
    n_layers: int | None = typer.Option(None, "--n-layers", help="Use only networks of this depth."),
    n_train: int | None = typer.Option(None, "--n-train", help="Use only networks trained on this N_D."),
    nm_per_px: float | None = typer.Option(
        None, "--nm-per-px",
        help="Pixel size of the input in nm (default: the store's for a store sample, "
        "else the image is taken to span the training field of view).",
    ),
    store: str | None = typer.Option(None, help="Training dataset store, if the run does not record it."),
    top: int = typer.Option(1, help="Also show the K best grid points per label (rank 1 is the answer)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Predict an image's labels with the best trained networks (ensemble mean ± spread): the labels of
    the store the run trained on (theta, J and D for a simulated store; an imported store's own names)."""
    from moirescale.use.predict import predict as run_predict
    from moirescale.use.predict import render_table, to_json

    preds, inp = run_predict(rundir, image, arch=arch, width=width, n_layers=n_layers, n_train=n_train,
                             nm_per_px=nm_per_px, store=store, top=top)
    if json_out:
        print(to_json(preds, inp))
    else:
        render_table(preds, inp)

def noise(
    rundir: Path = typer.Argument(..., help="Run directory of a sweep."),
    store: str | None = typer.Option(None, help="Dataset store (default: the sweep's)."),
    levels: str = typer.Option("0.05,0.1,0.2,0.3", help="Gaussian noise sigmas, comma-separated."),
    flip: str = typer.Option("0.01,0.05,0.1,0.2", help="Fractions of sign-flipped pixels."),
    select: str = typer.Option("all", help="'all' ok networks or the 'best' realization per grid point."),
    seed: int = typer.Option(0, help="Noise seed (the same noise for every network)."),
    n_test: int | None = typer.Option(None, "--n-test", help="Use only the first N test images."),
    n_train: str | None = typer.Option(
        None, "--n-train", help="Only networks of this N_D, or 'max': the largest N_D of each model."
    ),
) -> None:
    """Evaluate trained networks on noisy test images; writes RUNDIR/noise.parquet."""
    from moirescale.use.noise import evaluate_noise, summarize_noise
    from moirescale.use.predict import find_store

    store_dir = find_store(rundir, store)
    table = evaluate_noise(
        rundir, store_dir, levels=_floats(levels, "--levels"), flips=_floats(flip, "--flip"),
        select=select, seed=seed, n_test=n_test, n_train=n_train, progress=True,
    )
    summarize_noise(table)
    print(f"wrote {rd.noise_path(rundir)} ({len(table)} rows)")

def errors(
    rundir: Path = typer.Argument(..., help="Run directory (a sweep's or `moirescale train`'s)."),
    target: str = typer.Option(..., "--target", help="The grid point's target (a label name or all)."),
    n_train: int = typer.Option(..., "--n-train", help="The grid point's N_D."),
    grid: str | None = typer.Option(None, "--grid", help="Only this grid of the sweep config."),
    arch: str | None = typer.Option(None, "--arch", help="Only this architecture (fcn, resnet18, ...)."),
    width: int | None = typer.Option(None, "--width", help="Only networks of this width."),
    n_layers: int | None = typer.Option(None, "--n-layers", help="Only networks of this depth."),
    bins: list[str] | None = typer.Option(
        None, "--bins", help="Bins per label: N for every label, LABEL=N for one (repeat); default 5.",
        metavar="N|LABEL=N",
    ),
    store: str | None = typer.Option(None, help="Dataset store (default: the run's)."),
    csv: Path | None = typer.Option(None, "--csv", help="Also write the table to this CSV file."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Where in label space one grid point's test error sits: its squared error binned by each label."""
    from moirescale.use.error_map import error_by_label, parse_bins, print_errors, write_csv

    n_bins, per_label = parse_bins(bins)
    if csv is not None and csv.is_dir():
        from moirescale.errors import UserError

        raise UserError(f"--csv {csv} is a directory")
    table, head = error_by_label(rundir, target, n_train, grid=grid, arch=arch, width=width,
                                 n_layers=n_layers, n_bins=n_bins, per_label=per_label, store=store)
    if csv is not None:
        write_csv(csv, table, head)
    if json_out:
        import json

        print(json.dumps({**head, "bins": table.to_dict("records")}, allow_nan=False, default=str))
    else:
        print_errors(table, head)

def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Run directory of the demo."),
    config: Path = typer.Option(Path("configs/demo.yaml"), "--config", help="Sweep config to run."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete the run directory first (keeps data)."),
    noise_n_test: int = typer.Option(500, "--noise-n-test", help="Test images for the noise evaluation."),
    variant: Path = typer.Option(Path("configs/demo-fss.yaml"), "--variant",
                                 help="Sweep config of the second (nuisance-free) dataset variant."),
    no_variant: bool = typer.Option(False, "--no-variant", help="Run the first variant alone."),
) -> None:
    """Generate the demo datasets, sweep both variants, evaluate noise, fit and report; resumes."""
    from moirescale.use.demo import run_demo

    run_demo(out, config, fresh=fresh, noise_n_test=noise_n_test, variant=None if no_variant else variant)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the main app."""
    app.command("predict")(predict)
    app.command("noise")(noise)
    app.command("errors")(errors)
    app.command("demo")(demo)
