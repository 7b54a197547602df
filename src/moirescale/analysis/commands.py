"""CLI sub-commands of the analysis package: ``fit``, ``report``, ``advise``
(registered by moirescale.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from moirescale import rundir as rd
from moirescale.errors import UserError, split_option
from moirescale.labels import check_target_name
from moirescale.models import model_label

RUNDIR = typer.Argument(..., help="Run directory holding results.parquet.")
FIT_RANGE = typer.Option(
    None, "--fit-range", help="Fit only points with NMIN <= N_D <= NMAX.", metavar="NMIN NMAX"
)
FLOOR = typer.Option(False, "--floor", help="Also fit an irreducible error: eps = E + A N^-alpha.")
BOOT = typer.Option(1000, "--bootstrap", help="Bootstrap replicates for the (linear) power-law intervals.")
BOOT_NL = typer.Option(
    200,
    "--bootstrap-nonlinear",
    help="Bootstrap replicates for nonlinear fits (floor, joint law); each is a full refit.",
)
SEED = typer.Option(0, "--seed", help="Seed of the bootstraps.")
# The options added since are Annotated, so that the command functions called in-process get real defaults.
Loss = Annotated[
    str,
    typer.Option(
        "--loss",
        help="Loss of every fit: l2 (least squares) or huber (robust: Huber's loss of the standardised log "
        "residuals, as in Hoffmann et al. 2022). See docs/analysis.md.",
    ),
]
HuberDelta = Annotated[
    float | None,
    typer.Option(
        "--huber-delta",
        help="Huber threshold, in standard errors of a point's mean log (default 1.345); --loss huber only.",
    ),
]
MeanGuess = Annotated[
    list[str] | None,
    typer.Option(
        "--mean-guess",
        help="LABEL=MSE: the MSE of guessing LABEL's mean (its variance, in the units of test_mse); repeat "
        "per label; for a TABLE (a run directory reads it from its store). A curve whose MSE at its largest "
        "N_D is >= 0.9 of it is marked 'at the mean guess'.",
        metavar="LABEL=MSE",
    ),
]
MAX_BOOT = 100_000  # bootstrap replicates: more only costs memory (the interval is settled long before)
MAX_SUBSETS = 10_000


def _check_outputs(rundir: Path, names: tuple[str, ...]) -> None:
    """Refuse, before any work, outputs that cannot be written: a file name taken by a directory (or the
    figures folder taken by a file)."""
    for name in names:
        p = rundir / name
        if name == rd.FIGURES and p.exists() and not p.is_dir():
            raise UserError(f"{p} exists and is not a directory; move it away")
        if name != rd.FIGURES and p.is_dir():
            raise UserError(f"{p} is a directory; move it away so the {name} can be written")


def _settings(
    fit_range, floor: bool, n_boot: int, n_boot_nl: int, seed: int, loss: str = "l2",
    huber_delta: float | None = None,
):
    from moirescale.analysis import robust
    from moirescale.analysis.fits import FitSettings

    if huber_delta is not None and loss != "huber":
        raise UserError("--huber-delta applies to --loss huber only")
    delta = robust.HUBER_DELTA if huber_delta is None else huber_delta
    robust.check_loss(loss, delta)
    if n_boot < 50 or n_boot_nl < 20:
        raise UserError("--bootstrap must be >= 50 and --bootstrap-nonlinear >= 20 for a 95 % interval")
    if n_boot > MAX_BOOT or n_boot_nl > MAX_BOOT:
        raise UserError(f"--bootstrap and --bootstrap-nonlinear must be <= {MAX_BOOT}")
    if not 0 <= seed < 2**63:
        raise UserError(f"--seed must be in [0, 2^63), got {seed}")
    fr = None
    if fit_range:
        lo, hi = (float(v) for v in fit_range)
        if not 0 < lo <= hi < float("inf"):
            raise UserError(f"--fit-range {lo:g} {hi:g}: need finite 0 < NMIN <= NMAX")
        fr = (lo, hi)
    return FitSettings(
        fit_range=fr, floor=floor, n_boot=n_boot, n_boot_nonlinear=n_boot_nl, seed=seed, loss=loss,
        huber_delta=delta,
    )


def fit(
    rundir: Path = typer.Argument(
        ..., help="Run directory holding results.parquet, or a .csv/.parquet table of n_train, test_mse "
        "[, n_params, target, arch, realization]."
    ),
    fit_range: tuple[float, float] | None = FIT_RANGE,
    floor: bool = FLOOR,
    bootstrap: int = BOOT,
    bootstrap_nonlinear: int = BOOT_NL,
    seed: int = SEED,
    loss: Loss = "l2",
    huber_delta: HuberDelta = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="For a TABLE: directory for fits.json and the table as results.parquet."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print fits.json on stdout instead of text.")
    ] = False,
    mean_guess: MeanGuess = None,
) -> None:
    """Fit every scaling curve of RUNDIR (or of a TABLE) and write fits.json (RUNDIR/ or --out DIR/)."""
    from moirescale.analysis.pipeline import analyze, analyze_rundir, fits_json, write_fits
    from moirescale.analysis.table import check_out_dir, is_table, read_table, write_table

    settings = _settings(fit_range, floor, bootstrap, bootstrap_nonlinear, seed, loss, huber_delta)
    guess = _mean_guess(mean_guess)
    if is_table(rundir):
        if out is None and not as_json:
            raise UserError("fitting a TABLE needs --out DIR (where fits.json goes), or --json to print it")
        if out is not None:
            check_out_dir(out)
        df = read_table(rundir)
        _check_guess_labels(guess, df)
        settings.extra["source"] = str(rundir)
        if guess:
            settings.extra["mean_guess"] = guess  # in fits.json: report and advise of --out DIR read it
        an = analyze(df, settings, guess)
        path = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_table(out, df)
            path = write_fits(out, an)
    else:
        if out is not None:
            raise UserError("--out is for a TABLE (.csv/.parquet); a run directory keeps its own fits.json")
        if guess:
            raise UserError("--mean-guess is for a TABLE; a run directory reads each label's from its store")
        _check_outputs(rundir, (rd.FITS,))
        an = analyze_rundir(rundir, settings)
        path = write_fits(rundir, an)
    if as_json:
        typer.echo(fits_json(an))
        return
    _print_fits(an, path)


def _mean_guess(items: list[str] | None) -> dict[str, float]:
    """``--mean-guess LABEL=MSE`` (repeated) as {label: mse}; UserError for anything else."""
    out: dict[str, float] = {}
    form = "LABEL=MSE with a finite MSE > 0"
    for item in items or []:
        name, value = split_option(item, "--mean-guess", form, "theta=0.083")
        try:
            mse = float(value)
        except ValueError:
            mse = float("nan")
        if not 0 < mse < float("inf"):
            raise UserError(f"--mean-guess {item!r}: need {form}, e.g. theta=0.083")
        if name in out:
            raise UserError(f"--mean-guess gives {name!r} twice")
        check_target_name(name)
        out[name] = mse
    return out


def _check_guess_labels(guess: dict[str, float], df) -> None:
    """A mean guess for a label the table does not have is a typo: say which labels it has."""
    have = sorted({str(t) for t in df["target"].unique()} - {"all"})
    unknown = sorted(set(guess) - set(have))
    if unknown:
        raise UserError(f"--mean-guess for {', '.join(unknown)}: the table's targets are {', '.join(have)}")


def _print_fits(an, path: Path | None) -> None:
    """The text summary of ``fit``: one line per alpha_D, then the counts."""
    from moirescale.analysis.pipeline import at_mean_guess

    for meta, f in an.curves_d:
        lo, hi = f.interval(1)
        model = model_label(meta["arch"], meta.get("n_layers"), meta.get("width"))
        left = meta.get("variance_left")
        note = f"; at the mean guess: {left:.2f} of its MSE" if at_mean_guess(left) else ""
        typer.echo(
            f"alpha_D {model:>14} {meta['target']:>5} {meta['schedule']:>10}: "
            f"{f.alpha:.3f} [{lo:.3f}, {hi:.3f}]  ({f.n.size} points{note})"
        )
    typer.echo(
        f"{len(an.curves_d)} alpha_D, {len(an.curves_m)} alpha_M, {len(an.size_trends)} alpha_D-vs-N_M, "
        f"{len(an.joints)} joint fits ({an.settings.loss} loss); {len(an.skipped)} skipped -> {path}"
    )


def report(
    rundir: Path = RUNDIR,
    fit_range: tuple[float, float] | None = FIT_RANGE,
    floor: bool = FLOOR,
    bootstrap: int = BOOT,
    bootstrap_nonlinear: int = BOOT_NL,
    seed: int = SEED,
    subsets: int = typer.Option(50, "--subsets", help="Random subsets per N_r in the Fig. 3e bootstrap."),
    loss: Annotated[
        str | None,
        typer.Option("--loss", help="l2 or huber; default: the loss recorded in RUNDIR/fits.json, else l2."),
    ] = None,
    huber_delta: HuberDelta = None,
) -> None:
    """Fit, draw every figure the data supports, and write RUNDIR/report.html (plus fits.json, figures/).

    RUNDIR may be the --out DIR of ``fit TABLE``. Without --loss the report keeps the loss (and Huber
    threshold) that fits.json records, so it does not silently refit a robust fit by least squares."""
    from moirescale.analysis.pipeline import recorded_settings
    from moirescale.analysis.report import fit_and_report

    if not 2 <= subsets <= MAX_SUBSETS:
        raise UserError(f"--subsets must be between 2 and {MAX_SUBSETS}, got {subsets}")
    before = recorded_settings(rundir)
    if loss is None:
        loss = before.get("loss") if before.get("loss") in ("l2", "huber") else "l2"
        if loss == "huber" and huber_delta is None:
            huber_delta = before.get("huber_delta")
    settings = _settings(fit_range, floor, bootstrap, bootstrap_nonlinear, seed, loss, huber_delta)
    if isinstance(before.get("extra"), dict):  # what fit TABLE recorded: its source and any --mean-guess
        settings.extra = {k: v for k, v in before["extra"].items() if k in ("source", "mean_guess")}
    _check_outputs(rundir, (rd.FITS, rd.REPORT, rd.FIGURES))
    path, figs = fit_and_report(rundir, settings, n_subsets=subsets)
    drawn = [k for k, v in figs.items() if "png" in v]
    skipped = [f"{k} ({v['skipped']})" for k, v in figs.items() if "png" not in v]
    typer.echo(f"{len(drawn)} figures drawn" + (f"; skipped: {'; '.join(skipped)}" if skipped else ""))
    typer.echo(f"report -> {path}")


def advise(
    rundir: Path = RUNDIR,
    target: str = typer.Option(
        ..., "--target", help="a label name of the run's store (theta, J, D when simulated) or all."
    ),
    mse: float = typer.Option(..., "--mse", help="Target test MSE (scaled label units)."),
    arch: str | None = typer.Option(None, "--arch", help="Only this architecture (fcn, resnet18, vit)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    bootstrap: int = BOOT,
    bootstrap_nonlinear: int = BOOT_NL,
    seed: int = SEED,
    loss: Loss = "l2",
    huber_delta: HuberDelta = None,
) -> None:
    """What N_D (and N_M) reach a target test MSE, with 95 % intervals, from the fitted scaling laws."""
    from moirescale.analysis.pipeline import advise as _advise
    from moirescale.analysis.pipeline import analyze_rundir, format_advice

    if not 0 < mse < float("inf"):
        raise UserError(f"--mse must be a finite number > 0, got {mse}")
    check_target_name(target)  # a label of the run's store (theta, J, D when simulated) or all
    settings = _settings(None, False, bootstrap, bootstrap_nonlinear, seed, loss, huber_delta)
    an = analyze_rundir(rundir, settings)
    adv = _advise(an, target, mse, arch)
    typer.echo(json.dumps(adv, indent=1) if as_json else format_advice(adv))


def dimension(
    store: Path = typer.Argument(..., help="Dataset store directory."),
    split: str = typer.Option("train", "--split", help="train, val or test."),
    channels: str = typer.Option("top", "--channels", help="Image channels, as for train --channels."),
    n: int | None = typer.Option(None, "--n", help="Images to use (a seeded random subset; default 2000)."),
    bootstrap: int = typer.Option(200, "--bootstrap", help="Bootstrap replicates for the intervals."),
    seed: int = SEED,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Intrinsic dimension of a store's images (TwoNN and MLE, scikit-dimension), 95 % bootstrap intervals."""
    from moirescale.data.dimension import store_dimension

    if not 20 <= bootstrap <= MAX_BOOT:
        raise UserError(f"--bootstrap must be between 20 and {MAX_BOOT}, got {bootstrap}")
    res, meta = store_dimension(store, split, channels, n, n_boot=bootstrap, seed=seed)
    if as_json:
        typer.echo(json.dumps({**res.to_dict(), **meta}))
        return
    typer.echo(
        f"{meta['store']} [{split}, {channels}]: {res.n} distinct images of {res.n_input}, "
        f"{res.n_features} pixels each"
    )
    for name, e in res.estimators.items():
        typer.echo(f"  d_{name:<6} = {e.d:.2f}  (95 % [{e.lo:.2f}, {e.hi:.2f}], {res.n_boot} replicates)")


def compare_variants(
    spec: Path = typer.Argument(..., help="Variants spec (YAML; see docs/analysis.md)."),
    out: Path = typer.Option(..., "--out", help="Folder for the figure, tables and compare.html."),
) -> None:
    """Measured alpha_D of each dataset variant against 4/d (d: intrinsic dimension): figure, tables."""
    from moirescale.analysis.variants import compare_variants as _compare

    files = _compare(spec, out, log=typer.echo)
    typer.echo(f"{len(files)} files -> {out} (compare.html, alpha_vs_dimension.png, variants.md, ...)")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the main app."""
    app.command("fit")(fit)
    app.command("report")(report)
    app.command("advise")(advise)
    app.command("dimension")(dimension)
    app.command("compare-variants")(compare_variants)
