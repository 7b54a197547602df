"""The demo's second dataset variant, and what the two variants say together (issue 28).

The demo trains the default variant (``configs/demo.yaml``: random origin, seeded start, the top layer)
and the nuisance-free one (``configs/demo-fss.yaml``: fixed origin, shared start, the net magnetisation)
on the same FCN grid. This module

1. runs the second variant into ``DIR/fss`` (its store, sweep, fit and report: the library calls of
   ``moirescale generate``, ``sweep`` and ``report``);
2. estimates both stores' intrinsic dimension d (:func:`moirescale.data.dimension.store_dimension`, what
   ``moirescale dimension`` runs; cached as ``DIR/variants/dimension-<variant>.json``);
3. compares them with :func:`moirescale.analysis.variants.compare_variants` (the alpha_D-vs-4/d figure
   and tables of ``moirescale compare-variants``) into ``DIR/variants``;
4. renders the report's first section: both variants' learning curves, d, the alpha_D-vs-4/d figure, and a few
   sentences whose every number is the demo's own measurement.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from moirescale import rundir as rd
from moirescale.errors import UserError
from moirescale.fsio import atomic_path, atomic_write

DEFAULT_VARIANT_CONFIG = Path("configs/demo-fss.yaml")
ESTIMATOR = "twonn"
CURVES = "curves"  # DIR/variants/curves.png: both variants' learning curves
# What DIR/variants holds: compare_variants' files, the demo's spec, the d caches and the curves figure.
COMPARE_FILES = frozenset({
    "spec.yaml", "alpha_vs_dimension.png", "alpha_vs_dimension.svg", "points.csv", "variants.csv",
    "variants.md", "dimensions.json", "compare.html", f"{CURVES}.png", f"{CURVES}.svg",
    "dimension-default.json", f"dimension-{rd.DEMO_VARIANT}.json",
})


@dataclass(frozen=True)
class Side:
    """One variant of the demo: name, sweep config, run directory, store and the channels its FCNs read."""

    name: str
    description: str
    config: Path
    rundir: Path
    store: Path
    channels: str
    grids: tuple[str, ...]


def side(name: str, config: Path, rundir: Path) -> Side:
    from moirescale.sweep.config import load_config
    from moirescale.sweep.expand import grid_points

    loaded = load_config(config)
    cfg = loaded.cfg
    fcn = [g for g in cfg.grids if g.model.arch == "fcn"] or list(cfg.grids)
    channels = grid_points(cfg, fcn[0])[0].channels
    return Side(name, cfg.description, Path(config), Path(rundir), loaded.store_path, channels,
                tuple(g.name for g in cfg.grids))


def run_variant(v: Side, log: Callable[[str], None], ensure_dataset: Callable[[Path], Path]) -> None:
    """Store, sweep, fit and report of the second variant in ``v.rundir`` (each resumes or is skipped)."""
    from moirescale.analysis.report import fit_and_report
    from moirescale.sweep.runner import run_sweep

    ensure_dataset(v.config)
    log(f"sweep {v.config} into {v.rundir}")
    run_sweep(v.config, v.rundir, progress=True)
    if up_to_date([rd.fits_path(v.rundir), rd.report_path(v.rundir)],
                  list(rd.results_path(v.rundir).glob("part-*.parquet"))):
        log(f"{v.rundir}: fits.json and report.html are newer than every result: kept")
    else:
        log(f"fit and report {v.rundir}")
        fit_and_report(v.rundir)


def up_to_date(made: list[Path], inputs: list[Path]) -> bool:
    """Whether every file of ``made`` exists and is newer than every existing file of ``inputs``."""
    if not all(p.is_file() for p in made):
        return False
    newest = max((p.stat().st_mtime_ns for p in inputs if p.is_file()), default=0)
    return min(p.stat().st_mtime_ns for p in made) > newest


def dimension(v: Side, folder: Path, log: Callable[[str], None]) -> Path:
    """``folder/dimension-<name>.json``: ``moirescale dimension STORE --channels C --json`` of the variant's
    training split (2000 images), estimated once per store."""
    from moirescale.data.dimension import store_dimension

    path = folder / f"dimension-{v.name}.json"
    manifest = v.store / "manifest.json"
    if up_to_date([path], [manifest]):
        try:
            doc = json.loads(path.read_text())
            if doc.get("channels") == v.channels and ESTIMATOR in doc.get("estimators", {}):
                return path
        except (OSError, ValueError, AttributeError):
            pass
    log(f"intrinsic dimension of {v.store} ({v.channels})")
    res, meta = store_dimension(v.store, "train", v.channels)
    atomic_write(path, json.dumps({**res.to_dict(), **meta}, indent=1) + "\n")
    return path


def compare(sides: list[Side], folder: Path, log: Callable[[str], None]) -> dict[str, Path]:
    """d of both stores and ``compare_variants`` on their shared grids (the FCN grid) into ``folder``."""
    from moirescale.analysis.variants import compare_variants

    folder.mkdir(exist_ok=True)
    shared = [g for g in sides[0].grids if all(g in s.grids for s in sides)]
    spec = {
        "name": "demo-variants",
        "description": "The demo's two dataset variants on the same grid.",
        "estimator": ESTIMATOR,
        "variants": [
            {"name": s.name, "description": s.description, "run": str(s.rundir.resolve()),
             "dimension": str(dimension(s, folder, log).resolve()), "channels": s.channels,
             **({"grids": shared} if shared else {})}
            for s in sides
        ],
    }
    path = atomic_write(folder / "spec.yaml", yaml.safe_dump(spec, sort_keys=False))
    return compare_variants(path, folder, log)


def _largest_fcn_curves(v: Side, grids: list[str] | None) -> pd.DataFrame:
    """Geometric-mean test MSE per (target, N_D) of the variant's largest FCN (or largest model)."""
    from moirescale.stats import load_results, point_stats

    st = point_stats(load_results(v.rundir, by_grid=bool(grids)), keep_logs=False)
    if grids and "grid" in st:
        st = st[st["grid"].isin(grids)]
    fcn = st[st["arch"] == "fcn"]
    st = fcn if not fcn.empty else st
    st = st[st["n_params"] == st["n_params"].max()]
    return st[["target", "n_train", "gm", "gm_se", "arch", "n_layers", "width"]].dropna(subset=["gm"])


def curves_figure(curves: dict[str, pd.DataFrame], alphas: pd.DataFrame, folder: Path) -> Path:
    """``folder/curves.png``: both variants' learning curves, one panel per target, alpha_D in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moirescale.analysis.figures import LABEL_TEX, OKABE_ITO
    from moirescale.labels import order_targets
    from moirescale.models import model_label

    targets = order_targets(pd.concat(curves.values())["target"])
    fig, axes = plt.subplots(1, len(targets), figsize=(3.6 * len(targets), 3.4), squeeze=False,
                             layout="constrained")
    for ax, t in zip(axes[0], targets, strict=True):
        for i, (name, c) in enumerate(curves.items()):
            g = c[c["target"] == t].sort_values("n_train")
            if g.empty:
                continue
            a = alphas[(alphas["variant"] == name) & (alphas["target"] == t)]
            label = name + (f": α_D = {a['alpha'].iloc[0]:.2f}" if not a.empty else "")
            ax.plot(g["n_train"], g["gm"], "o-", color=OKABE_ITO[i % len(OKABE_ITO)], label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(LABEL_TEX.get(t, t))
        ax.set_xlabel("$N_D$")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("geometric-mean test MSE")
    first = next(iter(curves.values())).iloc[0]
    fig.suptitle(f"The two dataset variants, {model_label(first['arch'], first['n_layers'], first['width'])}")
    path = folder / f"{CURVES}.png"
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def _span(values: pd.Series) -> str:
    lo, hi = f"{float(values.min()):.2f}", f"{float(values.max()):.2f}"
    return lo if lo == hi else f"{lo} to {hi}"


def _targets(points: pd.DataFrame) -> str:
    names = {"theta": "&theta;"}
    return ", ".join(names.get(t, t) for t in points["target"])


def finding(points: pd.DataFrame, curves: dict[str, pd.DataFrame], names: tuple[str, str]) -> list[str]:
    """Two or three sentences of what the project found, with the demo's own measured numbers."""
    base, clean = names
    pb = points[(points["variant"] == base) & (points["family"] == "fcn")]
    pc = points[(points["variant"] == clean) & (points["family"] == "fcn")]
    if pb.empty or pc.empty:
        return ["Too few points for an FCN exponent on both variants: see the table below."]
    db, dc = float(pb["d"].iloc[0]), float(pc["d"].iloc[0])
    below = (pb["alpha_lo"] <= pb["four_over_d"]).all()
    s1 = (f"On the default data the images' intrinsic dimension is d = {db:.1f}, so the manifold argument "
          f"allows at most &alpha;<sub>D</sub> &asymp; 4/d = {4 / db:.2f}; the FCN measures "
          f"&alpha;<sub>D</sub> = {_span(pb['alpha'])} ({_targets(pb)}), "
          + ("near or below 4/d." if below else
             "partly above 4/d (a short step budget can steepen a curve)."))
    cb, cc = curves[base], curves[clean]
    nmax = int(min(cb["n_train"].max(), cc["n_train"].max()))
    ratios = []
    for t in sorted(set(cb["target"]) & set(cc["target"])):
        a = cb[(cb["target"] == t) & (cb["n_train"] == nmax)]["gm"]
        b = cc[(cc["target"] == t) & (cc["n_train"] == nmax)]["gm"]
        if len(a) and len(b) and b.iloc[0] > 0:
            ratios.append(float(a.iloc[0] / b.iloc[0]))
    lower = (f" and its test MSE at N<sub>D</sub> = {nmax} is {min(ratios):.1f}&ndash;{max(ratios):.1f}"
             "&times; lower" if ratios else "")
    reach = int((pc["alpha"] >= 1).sum())
    s2 = ("Without the nuisance (fixed origin, shared start, read through the net magnetisation) "
          f"d = {dc:.1f} (4/d = {4 / dc:.2f}){lower}, yet its exponents are "
          f"&alpha;<sub>D</sub> = {_span(pc['alpha'])}: "
          + ("none reaches the paper's 1." if reach == 0 else
             f"{reach} of {len(pc)} reach 1 at this budget."))
    s3 = ("In the project's larger studies (docs/results.md) no converged FCN exponent reaches 1 either; "
          "slopes near 1 appear where the step budget grows with N<sub>D</sub>, so the optimiser, not the "
          "data, sets them.")
    return [s1, s2, s3]


def section(sides: list[Side], folder: Path, log: Callable[[str], None]) -> list[str]:
    """The report's first section (HTML parts): runs :func:`compare`, then renders the curves, d, the
    alpha_D-vs-4/d figure and :func:`finding`."""
    from moirescale.analysis.report import _fmt, _img, _table

    files = compare(sides, folder, log)
    points = pd.read_csv(files["points"])
    dims = json.loads(Path(files["dimensions"]).read_text())
    shared = [g for g in sides[0].grids if all(g in s.grids for s in sides)]
    curves = {s.name: _largest_fcn_curves(s, shared) for s in sides}
    png = curves_figure(curves, points[points["family"] == "fcn"], folder)
    rows: list[dict[str, Any]] = []
    for s in sides:
        e = dims[s.name]["estimators"][ESTIMATOR]
        for r in points[points["variant"] == s.name].to_dict("records"):
            rows.append({
                "variant": s.name, "description": s.description, "channels": s.channels,
                "d": f"{_fmt(e['d'])} [{_fmt(e['lo'])}, {_fmt(e['hi'])}]", "x": f"{4 / e['d']:.2f}",
                "target": r["target"], "model": r["model"],
                "alpha": f"{r['alpha']:.2f} [{r['alpha_lo']:.2f}, {r['alpha_hi']:.2f}]",
            })
    names = (sides[0].name, sides[1].name)
    return [
        "<h2 id='finding'>What the demo finds: two dataset variants</h2>",
        "<p>" + " ".join(finding(points, curves, names)) + "</p>",
        f"<figure>{_img(str(png), 'learning curves of both variants')}<figcaption>Geometric-mean test MSE vs "
        "N<sub>D</sub> of the largest FCN on each variant (<code>variants/curves.png</code>).</figcaption>"
        "</figure>",
        _table(rows, [("variant", "variant"), ("description", "data"), ("channels", "channels"),
                      ("d", f"d ({ESTIMATOR}) [95 %]"), ("x", "4/d"), ("target", "target"),
                      ("model", "model"), ("alpha", "α_D [95 %]")],
               left={"variant", "description", "channels", "target", "model"}),
        f"<figure>{_img(str(files['png']), 'alpha_D vs 4/d')}<figcaption>Measured &alpha;<sub>D</sub> "
        "against 4/d, the exponent regression on a d-dimensional manifold predicts (dashed: equality; "
        "grey: the paper's 1&ndash;2). From <code>moirescale compare-variants</code> "
        "(<code>variants/</code>; the nuisance-free run's own report: "
        f"<code>{rd.DEMO_VARIANT}/{rd.REPORT}</code>).</figcaption></figure>",
    ]


def lead(sides: list[Side], folder: Path, log: Callable[[str], None]) -> Callable[[], list[str]]:
    """The report's lead section as a callable for :func:`moirescale.analysis.report.fit_and_report` (it needs
    the default run's fits.json, which that call writes first)."""
    return lambda: section(sides, folder, log)


def check_config(config: str | os.PathLike[str]) -> Path:
    p = Path(config)
    if not p.is_file():
        raise UserError(f"{p}: no such variant sweep config (run the demo from the repository root)")
    from moirescale.sweep.config import load_config

    load_config(p)
    return p


def print_variants(out: str | os.PathLike[str]) -> None:
    """Print both variants' d, 4/d and FCN alpha_D (``DIR/variants/points.csv``) when the demo made them."""
    from rich.console import Console
    from rich.table import Table

    path = Path(out) / rd.DEMO_COMPARE / "points.csv"
    if not path.is_file():
        return
    pts = pd.read_csv(path)
    t = Table(title="two dataset variants: intrinsic dimension d and alpha_D vs 4/d (docs/results.md)")
    for col in ("variant", "target", "model", "d", "4/d", "α_D", "95% interval"):
        t.add_column(col, justify="right" if col in ("d", "4/d", "α_D") else "left")
    for r in pts.to_dict("records"):
        t.add_row(str(r["variant"]), str(r["target"]), str(r["model"]), f"{r['d']:.1f}",
                  f"{r['four_over_d']:.2f}", f"{r['alpha']:.2f}",
                  f"[{r['alpha_lo']:.2f}, {r['alpha_hi']:.2f}]")
    Console().print(t)
