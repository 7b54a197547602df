"""``moirescale demo``: from nothing to a scaling-law report, each stage resumable by itself.

Stages (each skips or resumes what is already done):

1. dataset: :func:`moirescale.data.generate.ensure_store` of the dataset the sweep config names (what
   ``moirescale generate`` runs; resumes an unfinished store);
2. sweep: :func:`moirescale.sweep.runner.run_sweep` (what ``moirescale sweep CONFIG --out DIR`` runs; skips
   run ids already in the results table);
3. noise: :func:`moirescale.use.noise.evaluate_noise` (skips rows already in ``DIR/noise.parquet``);
4. examples: ``DIR/figures/examples.png`` (the paper's Fig. 2: top-layer images at several theta, J, D);
5. variant: the same stages for the nuisance-free variant (``configs/demo-fss.yaml``: store, sweep, fit and
   report into ``DIR/fss``), :mod:`moirescale.use.demo_variants`;
6. fit + report: :func:`moirescale.analysis.report.fit_and_report` (what ``moirescale report DIR`` runs;
   redone when any input is newer), led by the two variants' finding: both curves, the intrinsic dimension d
   of both stores (``moirescale dimension``) and the alpha_D-vs-4/d figure of ``moirescale compare-variants``
   (``DIR/variants``);

then it prints where the report is and the fitted alpha_D with their intervals. Every stage is a library call,
the one the matching ``moirescale`` command makes; a failing stage stops the demo with its own message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from moirescale import rundir as rd
from moirescale.errors import UserError
from moirescale.fsio import atomic_path, atomic_write, is_empty, real_dir, temp_target
from moirescale.models import model_label
from moirescale.use.demo_variants import COMPARE_FILES, DEFAULT_VARIANT_CONFIG, up_to_date

DEFAULT_CONFIG = Path("configs/demo.yaml")
# Written when the demo creates its run directory; `--fresh` removes nothing from a directory without it.
MARKER = rd.DEMO_MARKER
MARKER_TEXT = "This directory was created by `moirescale demo`; `moirescale demo --fresh` may clear it.\n"


def _log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]demo[/bold cyan] {msg}")


def _store_is_complete(path: Path) -> bool:
    from moirescale.data.store import read_manifest

    try:
        return bool(read_manifest(path).get("complete"))
    except UserError:
        return False


def ensure_dataset(config: Path) -> Path:
    """Generate (or finish) the dataset store that the sweep config names; return its path."""
    from moirescale.sweep.config import load_config

    loaded = load_config(config)
    store = loaded.store_path
    if _store_is_complete(store):
        _log(f"dataset {store}: already complete")
        return store
    req = loaded.dataset_request()
    if req is None:
        raise UserError(f"{config}: dataset {store} is missing and the config has no dataset.generate")
    _log(f"generating the dataset {store} from {req.config}")
    return req.make()


def pick_examples(labels: np.ndarray, n: int = 4) -> list[tuple[str, int]]:
    """Indices of samples that sweep each label across its range with the other two near mid-range.

    Row r varies label r (theta, J, D) over ``n`` evenly spaced quantiles; each pick is the sample nearest (in
    the samples' own min-max scaled units) to the wanted point. Returns (row name, index) pairs, row-major.
    """
    from moirescale.labels import LABELS

    labels = np.asarray(labels, dtype=np.float64)
    span = np.ptp(labels, axis=0)
    z = (labels - labels.min(axis=0)) / np.where(span > 0, span, 1.0)
    mid = np.median(z, axis=0)
    picks: list[tuple[str, int]] = []
    for r, name in enumerate(LABELS):
        for q in np.linspace(0.05, 0.95, n):
            want = mid.copy()
            want[r] = np.quantile(z[:, r], q)
            w = np.ones(3)
            w[r] = 4.0  # hit the swept label closely; the others matter less
            d = ((z - want) ** 2 * w).sum(axis=1)
            for i in np.argsort(d):  # no sample twice
                if int(i) not in {j for _, j in picks}:
                    picks.append((name, int(i)))
                    break
    return picks


def examples_figure(store_path: str | os.PathLike[str], out: str | os.PathLike[str], n: int = 4,
                    max_read: int = 2000) -> Path:
    """Save the Fig. 2 panel: top-layer images (red +1, blue -1) sweeping theta, J and D in turn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moirescale.data.store import open_store

    st = open_store(store_path, checksum=False)
    split = "test" if st.split_len("test") >= 3 * n else "train"
    m = min(st.split_len(split), max_read)
    if m < 3 * n:
        raise UserError(f"{store_path}: too few samples ({m}) to draw the examples figure")
    images, labels = st.read(split, np.arange(m))
    picks = pick_examples(labels, n)
    names = {"theta": "θ sweep", "J": "J sweep", "D": "D sweep"}
    fig, axes = plt.subplots(3, n, figsize=(2.1 * n + 1.0, 6.9), squeeze=False, layout="constrained")
    for k, (row, i) in enumerate(picks):
        ax = axes[k // n][k % n]
        im = ax.imshow(images[i, 0], cmap="bwr", vmin=-1, vmax=1, origin="lower", interpolation="nearest")
        th, J, D = labels[i]
        ax.set_title(f"θ={th:.2f}°  J={J:.2f}\nD={D:.2f} meV", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if k % n == 0:
            ax.set_ylabel(names[row], fontsize=9)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="top-layer $S_z$")
    fig.suptitle("Example domain images (top layer; red +1, blue −1)", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(out) as tmp:  # a killed demo never leaves a half-written figure that would be reused
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return out


def alpha_table(rundir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The data-scaling fits (variable n_train) of ``RUNDIR/fits.json``, sorted for printing."""
    path = rd.fits_path(rundir)
    if not path.is_file():
        return []
    try:
        doc = rd.read_fits(path)
    except UserError:
        raise UserError(f"{path} is not a {rd.FITS} written by `moirescale fit`; delete it, rerun") from None
    fits = [f for f in doc["fits"] if f.get("variable") == "n_train"]
    return sorted(fits, key=lambda f: (f.get("target") or "", f.get("arch") or "", f.get("n_params") or 0))


def print_alphas(rundir: str | os.PathLike[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    fits = alpha_table(rundir)
    console = Console()
    if not fits:
        console.print("no data-scaling fits (too few N_D points?)")
        return
    t = Table(title="fitted data-scaling exponents: MSE ∝ N_D^(−α_D)")
    for col in ("target", "model", "N_M", "α_D", "95% interval", "points"):
        t.add_column(col, justify="right" if col in ("N_M", "α_D", "points") else "left")
    for f in fits:
        lo, hi = f.get("alpha_lo"), f.get("alpha_hi")
        interval = f"[{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
        alpha = f.get("alpha")
        t.add_row(str(f.get("target")), model_label(f.get("arch"), f.get("n_layers"), f.get("width")),
                  f"{f['n_params']:.3g}" if f.get("n_params") else "",
                  f"{alpha:.2f}" if alpha is not None else "", interval, str(f.get("n_points", "")))
    console.print(t)


def _up_to_date(out: Path, variant: Path | None = None) -> bool:
    """Whether fits.json and report.html are newer than everything they are made from (the second variant's
    results and fits included)."""
    made = [rd.fits_path(out), rd.report_path(out)]
    if not all(p.is_file() for p in made):
        return False
    try:
        rd.read_fits(made[0])
    except UserError:
        return False  # a corrupt fits.json: fit and report again
    inputs = [*rd.results_path(out).glob("part-*.parquet"), rd.noise_path(out), rd.examples_path(out)]
    if variant is not None:
        if not rd.fits_path(variant).is_file():
            return False
        inputs += [*rd.results_path(variant).glob("part-*.parquet"), rd.fits_path(variant)]
    return up_to_date(made, inputs)


def _marker_text(out: Path) -> str:
    """The marker's content: fixed text plus the identity (device, inode) of the directory it marks, so a
    marker copied into another directory (or a copied tree) does not make that directory the demo's."""
    st = os.stat(out)
    return f"{MARKER_TEXT}directory {st.st_dev}:{st.st_ino}\n"


def _is_ours(out: Path) -> bool:
    """Whether ``out`` carries the marker :func:`claim_rundir` wrote there (a regular file, not a link)."""
    marker = rd.marker_path(out)
    try:
        return not marker.is_symlink() and marker.is_file() and marker.read_text() == _marker_text(out)
    except (OSError, UnicodeDecodeError):
        return False


def claim_rundir(out: Path) -> None:
    """Create ``out`` (or adopt it when empty) and mark it as the demo's, so ``--fresh`` may clear it later.

    A directory that already holds something (a dotfile too) gets no marker: the demo never claims what it
    did not make.
    """
    if out.is_dir() and (_is_ours(out) or not is_empty(out)):
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(rd.marker_path(out), _marker_text(out))


def _figure_names() -> frozenset[str]:
    from moirescale.analysis.figures import FIGURES

    stems = [*FIGURES, "fig9_noise"]
    return frozenset(f"{s}.{ext}" for s in stems for ext in ("png", "svg"))


def _own_file(folder: str, name: str) -> bool:
    """Whether ``folder/name`` (``folder`` "" for the top level) is a file name the demo's stages write."""
    if folder == rd.DEMO_COMPARE:
        return name in COMPARE_FILES
    return rd.is_own(folder, name, _figure_names() if folder == rd.FIGURES else frozenset())


def _real_subdir(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink()


def _demo_files(out: Path, nested: bool = True) -> tuple[list[Path], list[Path], list[str]]:
    """(files, folders, foreign): what ``--fresh`` would remove (folders deepest first), and the relative
    paths of every entry the demo does not write (a user's file, a folder inside a folder, a link where a
    folder belongs). ``nested``: ``out`` is the demo's own directory, which also holds the second variant's
    run directory (``fss/``, checked by the same rules) and the comparison folder (``variants/``)."""
    files: list[Path] = []
    folders: list[Path] = []
    foreign: list[str] = []

    def ours(folder: str, name: str) -> bool:
        final = temp_target(name)  # a killed writer's temporary file of one of our names
        return _own_file(folder, final if final is not None else name)

    for top in sorted(out.iterdir()):
        if _real_subdir(top) and (top.name in rd.FOLDERS or (nested and top.name == rd.DEMO_COMPARE)):
            folders.append(top)
            for p in sorted(top.iterdir()):
                if (p.is_symlink() or not p.is_dir()) and ours(top.name, p.name):
                    files.append(p)
                else:
                    foreign.append(f"{top.name}/{p.name}")
        elif nested and top.name == rd.DEMO_VARIANT and _real_subdir(top):
            f, d, x = _demo_files(top, nested=False)
            files += f
            folders += [*d, top]
            foreign += [f"{top.name}/{n}" for n in x]
        elif ours("", top.name) and (top.is_symlink() or not top.is_dir()):
            files.append(top)
        else:
            foreign.append(top.name)
    return files, folders, foreign


@contextlib.contextmanager
def _sweep_lock_free(out: Path) -> Iterator[None]:
    """Hold ``out/.sweep.lock`` (when there is one) for the block; UserError while a sweep holds it."""
    lock = rd.lock_path(out)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        yield
        return
    except OSError as exc:
        raise UserError(f"--fresh: cannot open the lock file {lock} ({exc.strerror}); move it away") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"--fresh: a sweep is running in {out} (it holds {lock.name}); wait for it or stop it first"
            ) from None
        yield
    finally:
        os.close(fd)


def _fresh(out: Path) -> None:
    """Remove what the demo wrote in ``out``; refuse, removing nothing, unless every file is the demo's.

    The marker file proves the demo created this very directory (it names the directory's inode); every file
    in the tree must also be one the demo's stages write, by its exact name (:func:`_own_file`), so a user's
    file put anywhere inside stops the removal instead of going with it. A running sweep (its lock held) and a
    working directory inside ``out`` also refuse. Links are removed, never followed.
    """
    here, target = Path.cwd().resolve(), out.resolve()
    if target == Path.home().resolve() or here == target or target in here.parents:
        raise UserError(f"--fresh would delete {out}, which holds the current or home directory; use another "
                        "--out")
    if is_empty(out):
        return
    if not _is_ours(out):
        raise UserError(
            f"--fresh would delete {out}: not a demo run directory (no {MARKER} marker of "
            "`moirescale demo` made for this directory); delete it yourself or use another --out"
        )
    files, folders, foreign = _demo_files(out)
    if foreign:
        raise UserError(
            f"--fresh would delete files the demo did not write in {out} ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); move them away or use another --out"
        )
    with _sweep_lock_free(out), _sweep_lock_free(out / rd.DEMO_VARIANT):
        _log(f"--fresh: removing the demo's files in {out}")
        for p in files:
            if p.name not in (MARKER, rd.LOCK):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        for d in folders:
            with contextlib.suppress(OSError):  # not empty: someone wrote there since the check; keep it
                d.rmdir()


def _check_inputs(out: Path, config: Path, variant: str | os.PathLike[str] | None,
                  noise_n_test: int | None) -> Path | None:
    """Refuse bad arguments before anything is written or removed; returns the checked variant config."""
    from moirescale.sweep.config import load_config

    if not config.is_file():
        raise UserError(f"{config}: no such sweep config (run the demo from the repository root)")
    load_config(config)
    from moirescale.use.demo_variants import check_config

    checked = None if variant is None else check_config(variant)
    if noise_n_test is not None and noise_n_test < 1:
        raise UserError(f"--noise-n-test must be >= 1, got {noise_n_test}")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"--out {out} exists and is not a directory")
    if os.path.lexists(out):
        real_dir(out)  # a link loop, a directory that cannot be opened: one line
    return checked


@contextlib.contextmanager
def _stage(name: str, stamps: dict[str, float]) -> Iterator[None]:
    """Time one stage into ``stamps`` (written to DIR/timing.json) and log it."""
    t = time.perf_counter()
    yield
    stamps[name] = time.perf_counter() - t
    _log(f"{name}: {stamps[name]:.0f} s")


def _examples(out: Path, store: Path) -> None:
    """The paper's Fig. 2 from the store, once."""
    ex = rd.examples_path(out)
    real_dir(out, rd.FIGURES)  # a link planted at RUNDIR/figures is refused, not followed
    if ex.is_file():
        _log(f"{ex}: already there")
    else:
        examples_figure(store, ex)
        _log(f"wrote {ex}")


def _second_variant(out: Path, config: Path, variant: Path) -> tuple[Path, Any]:
    """The nuisance-free variant's stages into ``out/fss``; returns its folder and the report's lead."""
    from moirescale.use import demo_variants as dv

    var_dir = out / rd.DEMO_VARIANT
    sides = [dv.side("default", config, out), dv.side(rd.DEMO_VARIANT, variant, var_dir)]
    _log(f"the second dataset variant ({sides[1].description}) into {var_dir}")
    dv.run_variant(sides[1], _log, ensure_dataset)
    return var_dir, dv.lead(sides, out / rd.DEMO_COMPARE, _log)


def _fit_and_report(out: Path, var_dir: Path | None, lead: Any) -> None:
    """Fit and report, unless fits.json and report.html are newer than every result."""
    if _up_to_date(out, var_dir):
        _log("fits.json and report.html are newer than every result: kept")
        return
    from moirescale.analysis.report import fit_and_report

    _log(f"fit and report {out}" + (" (with the two variants' d and alpha_D vs 4/d)" if lead else ""))
    fit_and_report(out, lead=lead)


def run_demo(out: str | os.PathLike[str], config: str | os.PathLike[str] = DEFAULT_CONFIG,
             fresh: bool = False, noise_select: str = "all", noise_n_test: int | None = 500,
             noise_n_train: str | int | None = "max",
             variant: str | os.PathLike[str] | None = DEFAULT_VARIANT_CONFIG) -> Path:
    """Run (or resume) the whole demo into ``out``; returns the report path.

    Parameters
    ----------
    out : the run directory
    config : the sweep config (default configs/demo.yaml)
    fresh : delete ``out`` first (the dataset store is kept: it is the expensive part and is deterministic)
    noise_select, noise_n_test, noise_n_train : passed to :func:`moirescale.use.noise.evaluate_noise`
        (by default: every realization, at the largest N_D of each model, on 500 test images)
    variant : the second (nuisance-free) variant's sweep config (default configs/demo-fss.yaml), run into
        ``out/fss`` and compared with the first in the report; None: the first variant alone
    """
    from moirescale.sweep.runner import run_sweep
    from moirescale.use.noise import evaluate_noise, summarize_noise

    out, config = Path(out), Path(config)
    variant = _check_inputs(out, config, variant, noise_n_test)
    if fresh and out.exists():
        _fresh(out)
    claim_rundir(out)
    t0 = time.perf_counter()
    stamps: dict[str, float] = {}
    with _stage("dataset", stamps):
        store = ensure_dataset(config)
    with _stage("sweep", stamps):
        _log(f"sweep {config} into {out}")
        run_sweep(config, out, progress=True)
    with _stage("noise", stamps):
        _log("noise robustness of the trained networks")
        summarize_noise(evaluate_noise(out, store, select=noise_select, n_test=noise_n_test,
                                       n_train=noise_n_train, progress=True))
    with _stage("examples", stamps):
        _examples(out, store)
    var_dir, lead = None, None
    if variant is not None:
        with _stage("variant", stamps):
            var_dir, lead = _second_variant(out, config, variant)
    with _stage("fit+report", stamps):
        _fit_and_report(out, var_dir, lead)

    total = time.perf_counter() - t0
    atomic_write(rd.timing_path(out), json.dumps({**stamps, "total": total}, indent=2) + "\n")
    print_alphas(out)
    if variant is not None:
        from moirescale.use.demo_variants import print_variants

        print_variants(out)
    report = rd.report_path(out)
    print(f"report: {report.resolve()}  (demo took {total / 60:.1f} min)")
    return report
