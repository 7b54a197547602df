"""One self-contained ``report.html``: figures embedded as base64 PNG, exponent tables with intervals
beside the paper's stated range, the sweep config, dataset summary, run counts, software versions
and git commit.

The page carries a tiny script that counts the images that decoded (``naturalWidth > 0``) and writes the count
into ``#images-status``, so a headless browser can check that every figure loads.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import platform
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from moirescale import rundir as rd
from moirescale.analysis.fits import PAPER_ALPHA_MAX, PAPER_ALPHA_RANGE
from moirescale.analysis.pipeline import NEAR_MEAN_GUESS, Analysis, at_mean_guess
from moirescale.errors import UserError
from moirescale.fsio import atomic_write
from moirescale.models import model_label
from moirescale.stats import status_counts

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1,h2,h3{color:#0b3d6b} table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right} th{background:#eef2f7}
td.l,th.l{text-align:left} figure{margin:1.2em 0} figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:13px;color:#444} .skip{color:#888;font-size:13px} pre{background:#f6f8fa;padding:.6em;
overflow:auto;font-size:12px} .ok{color:#007a3d} .warn{color:#b35900}
"""

_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img');
  var ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  var el = document.getElementById('images-status');
  el.setAttribute('data-loaded', ok);
  el.setAttribute('data-total', imgs.length);
  el.textContent = ok + ' of ' + imgs.length + ' figures loaded';
});
</script>
"""


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, str):
        return html.escape(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "&ndash;"
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _convergence_section(checks: list[dict[str, Any]]) -> str:
    """The budget checks: each curve's largest N_D retrained with a larger step budget (empty if none)."""
    if not checks:
        return ""
    rows = [
        {**c, "model": model_label(c["arch"], c.get("n_layers"), c.get("width")),
         "_flag": "<b>NOT CONVERGED</b>" if c["flagged"] else "converged"}
        for c in checks
    ]
    cols = [("grid", "grid"), ("model", "model"), ("target", "target"), ("n_train", "N_D"),
            ("mse", "MSE (curve budget)"), ("mse_long", "MSE (larger budget)"), ("ratio", "ratio"),
            ("_flag", "verdict")]
    n_bad = sum(c["flagged"] for c in checks)
    note = (
        f"<p class='skip'><b>{n_bad} curve(s) not converged</b>: their largest-N<sub>D</sub> MSE fell by "
        "more than 10 % with the larger budget, so their &alpha;<sub>D</sub> is partly the optimiser's.</p>"
        if n_bad
        else "<p>Every checked curve is converged at its largest N<sub>D</sub> (MSE within 10 %).</p>"
    )
    return ("<h2>Convergence check (largest N<sub>D</sub>, larger step budget)</h2>" + note
            + _table(rows, cols, left={"grid", "model", "target"}))


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]], left: set[str] | None = None) -> str:
    left = left or set()
    head = "".join(f"<th class='{'l' if k in left else ''}'>{html.escape(t)}</th>" for k, t in cols)
    body = []
    for r in rows:
        cells = "".join(
            f"<td class='{'l' if k in left else ''}'>{r.get(k) if k.startswith('_') else _fmt(r.get(k))}</td>"
            for k, _ in cols
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _where(s: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("what", "reason") and v not in (None, ""))


def _paper_verdict(alpha: float, lo: float | None, hi: float | None) -> str:
    """Where an alpha_D interval sits relative to the paper's 1-2 (up to ~2.3)."""
    lo = alpha if lo is None else lo
    hi = alpha if hi is None else hi
    a, b = PAPER_ALPHA_RANGE
    if hi >= a and lo <= b:
        return "<span class='ok'>overlaps 1&ndash;2</span>"
    if hi >= a and lo <= PAPER_ALPHA_MAX:
        return "<span class='ok'>within 1&ndash;2.3</span>"
    return "<span class='warn'>" + ("below" if hi < a else "above") + " the paper's range</span>"


def _img(path: str, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def software_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("moirescale", "numpy", "scipy", "pandas", "pyarrow", "matplotlib", "torch", "timm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit(start: str | os.PathLike[str] | None = None) -> str:
    """Commit of the source tree (``+dirty`` if modified), or 'unknown' outside git."""
    here = Path(start) if start else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fit_rows(fits: list[dict[str, Any]], variable: str) -> list[dict[str, Any]]:
    rows = []
    for f in fits:
        if f["variable"] != variable:
            continue
        r = dict(f)
        if f["arch"] == "fcn" and variable != "n_train":  # a family of widths at one depth
            r["model"] = f"FCN n_l={f['n_layers']}"
        else:
            r["model"] = model_label(f["arch"], f.get("n_layers"), f.get("width"))
        r["interval"] = f"[{_fmt(f['alpha_lo'])}, {_fmt(f['alpha_hi'])}]"
        r["range"] = f"{f['n_min']:,}&ndash;{f['n_max']:,}"
        if variable == "n_train":
            r["_paper"] = _paper_verdict(f["alpha"], f["alpha_lo"], f["alpha_hi"])
            left = f.get("variance_left")
            r["_left"] = "" if left is None else (
                f"{left:.2f}" + (" (at the mean guess)" if at_mean_guess(left) else ""))
        if f.get("floor") is not None:
            r["floor_s"] = f"{_fmt(f['floor'])} [{_fmt(f['floor_lo'])}, {_fmt(f['floor_hi'])}]"
        rows.append(r)
    return rows


def _estimator(settings: dict[str, Any]) -> str:
    """How the laws were fitted, in words: least squares, or the Huber loss with its threshold."""
    if settings.get("loss") == "huber":
        return (
            f"the Huber loss (&delta; = {_fmt(settings.get('huber_delta'))} standard errors) of the weighted "
            "log residuals"
        )
    return "weighted least squares"


def build_report(
    an: Analysis,
    rundir: str | os.PathLike[str],
    figures: dict[str, dict[str, Any]],
    results_df: pd.DataFrame,
    lead: list[str] | None = None,
) -> str:
    """The report page as a string (see module docstring): the header, ``lead`` (HTML parts a caller puts
    first, e.g. the demo's two-variant finding), then one section after another, each rendered by its own
    ``_section_*`` function from the analysis dict and the run directory's files."""
    rundir = Path(rundir)
    doc = an.to_dict()
    parts: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>moirescale report: {html.escape(rundir.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Scaling-law report: {html.escape(str(rundir))}</h1>",
        f"<p>Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. "
        "<span id='images-status' data-loaded='-1' data-total='-1'>"
        "figures not checked (no script)</span></p>",
        "<p>Statistic: geometric mean of the test MSE over network realizations (scaled label units: "
        "1 = the square of the label's own sampling range in the dataset). "
        f"Exponents from {_estimator(doc['settings'])} on log&ndash;log axes; 95 % intervals from a "
        "bootstrap over realizations (see <code>docs/analysis.md</code>). "
        "Paper (&#268;ade&#382; &amp; Kim 2025): &alpha;<sub>D</sub> between 1 and 2, up to &asymp; 2.3.</p>",
    ]
    source = (doc["settings"].get("extra") or {}).get("source")
    if source:
        parts.append(f"<p>Results from the table <code>{html.escape(str(source))}</code>.</p>")
    parts += lead or []

    for section in (
        _section_runs(results_df),
        _section_figures(rundir, figures),
        _section_alpha_d(doc),
        _section_alpha_m(doc),
        _section_size_trend(doc),
        _section_joint(doc),
        _section_extrapolation(doc),
        _section_checks(doc),
        _section_noise(rundir),
        _section_provenance(rundir, doc),
    ):
        parts += section
    parts.append(_SCRIPT + "</body></html>")
    return "\n".join(parts)


def _section_runs(results_df: pd.DataFrame) -> list[str]:
    """The run counts per model and target."""
    parts: list[str] = []
    counts = status_counts(results_df)
    parts.append("<h2>Runs</h2>")
    parts.append(
        _table(
            counts.to_dict("records"),
            [
                ("arch", "arch"),
                ("target", "target"),
                ("ok", "ok"),
                ("failed", "failed"),
                ("diverged", "diverged"),
            ],
            left={"arch", "target"},
        )
    )
    return parts


def _section_figures(rundir: Path, figures: dict[str, dict[str, Any]]) -> list[str]:
    """The figures (Fig. 2 examples first), or why each was skipped."""
    parts: list[str] = []
    parts.append("<h2>Figures</h2>")
    ex = rd.examples_path(rundir)
    if ex.exists():
        parts.append(
            f"<figure>{_img(str(ex), 'example images')}<figcaption>Fig. 2: example magnetic-domain "
            "images at several (&theta;, J, D).</figcaption></figure>"
        )
    else:
        parts.append(
            f"<p class='skip'>Fig. 2 (example images): not enough data: no {rd.FIGURES}/{rd.EXAMPLES} "
            "in the run directory.</p>"
        )
    for name, f in figures.items():
        if "png" in f:
            parts.append(
                f"<figure id='{name}'>{_img(f['png'], f['caption'])}<figcaption>"
                f"{html.escape(f['caption'])} (<code>{rd.FIGURES}/{name}.png</code>, <code>.svg</code>)"
                "</figcaption></figure>"
            )
        else:
            parts.append(f"<p class='skip'>{html.escape(f['caption'])}: {html.escape(f['skipped'])}.</p>")
    return parts


def _section_alpha_d(doc: dict[str, Any]) -> list[str]:
    """The alpha_D table."""
    parts: list[str] = []
    parts.append(
        "<h2>Data-scaling exponents &alpha;<sub>D</sub> (&epsilon; = A N<sub>D</sub><sup>&minus;&alpha;"
        "</sup>)</h2>"
    )
    rows_d = _fit_rows(doc["fits"], "n_train")
    cols = [
        ("model", "model"),
        ("n_params", "N_M"),
        ("target", "target"),
        ("schedule", "schedule"),
        ("alpha", "alpha_D"),
        ("interval", "95 % interval"),
        ("_paper", "paper: 1-2 (&le;2.3)"),
        ("prefactor", "A"),
        ("range", "N_D range"),
        ("n_points", "points"),
        ("chi2_red", "chi2/dof"),
        ("ci_scale", "CI scale"),
    ]
    if any(r.get("floor_s") for r in rows_d):
        cols.insert(6, ("floor_s", "floor E [95 %]"))
    if any(r.get("_left") for r in rows_d):
        cols.append(("_left", "MSE / mean guess at the largest N_D"))
    parts.append(
        _table(rows_d, cols, left={"model", "target", "schedule", "_left"})
        if rows_d
        else "<p class='skip'>no alpha_D fits</p>"
    )
    if any(at_mean_guess(r.get("variance_left")) for r in rows_d):
        parts.append(
            f"<p>A curve <em>at the mean guess</em> ends above {NEAR_MEAN_GUESS:.0%} of the MSE of guessing "
            "each label's mean (the test labels' variance): it has learnt next to nothing, and its "
            "&alpha;<sub>D</sub> describes the approach to the mean, not a learning curve, whatever its "
            "budget check says.</p>"
        )
    return parts


def _section_alpha_m(doc: dict[str, Any]) -> list[str]:
    """The alpha_M table."""
    parts: list[str] = []
    parts.append(
        "<h2>Model-size exponents &alpha;<sub>M</sub> (&epsilon; = A N<sub>M</sub><sup>&minus;&alpha;"
        "</sup>)</h2>"
    )
    rows_m = _fit_rows(doc["fits"], "n_params")
    parts.append(
        _table(
            rows_m,
            [
                ("model", "model"),
                ("target", "target"),
                ("n_train", "N_D"),
                ("schedule", "schedule"),
                ("alpha", "alpha_M"),
                ("interval", "95 % interval"),
                ("range", "N_M range"),
                ("n_points", "points"),
                ("chi2_red", "chi2/dof"),
            ],
            left={"model", "target", "schedule"},
        )
        if rows_m
        else "<p class='skip'>no model-size fits (needs 3 or more model sizes per family)</p>"
    )
    return parts


def _section_size_trend(doc: dict[str, Any]) -> list[str]:
    """The alpha_D-vs-N_M table."""
    parts: list[str] = []
    parts.append(
        "<h2>&alpha;<sub>D</sub> vs model size: &alpha;<sub>D</sub> = a<sub>D</sub> log<sub>10</sub>"
        "(N<sub>M</sub>/10<sup>6</sup>) + b<sub>D</sub> (largest N<sub>M</sub> left out)</h2>"
    )
    trend_rows = [
        {
            **t,
            "a_i": f"[{_fmt(t['a_D_lo'])}, {_fmt(t['a_D_hi'])}]",
            "b_i": f"[{_fmt(t['b_D_lo'])}, {_fmt(t['b_D_hi'])}]",
        }
        for t in doc["alpha_vs_size"]
    ]
    parts.append(
        _table(
            trend_rows,
            [
                ("arch", "family"),
                ("target", "target"),
                ("schedule", "schedule"),
                ("a_D", "a_D"),
                ("a_i", "95 %"),
                ("b_D", "b_D"),
                ("b_i", "95 %"),
                ("n_points", "sizes fitted"),
            ],
            left={"arch", "target", "schedule"},
        )
        if trend_rows
        else "<p class='skip'>not enough model sizes (needs 4, one left out)</p>"
    )
    return parts


def _section_joint(doc: dict[str, Any]) -> list[str]:
    """The joint-law table."""
    parts: list[str] = []
    parts.append(
        "<h2>Joint law &epsilon; = E + A N<sub>M</sub><sup>&minus;a</sup> + B N<sub>D</sub>"
        "<sup>&minus;b</sup></h2>"
    )
    jrows = [
        {**j, **{f"{k}_i": f"[{_fmt(j[f'{k}_lo'])}, {_fmt(j[f'{k}_hi'])}]" for k in "EAaBb"}}
        for j in doc["joint"]
    ]
    parts.append(
        _table(
            jrows,
            [
                ("arch", "family"),
                ("target", "target"),
                ("schedule", "schedule"),
                ("E", "E"),
                ("E_i", "95 %"),
                ("a", "a"),
                ("a_i", "95 %"),
                ("b", "b"),
                ("b_i", "95 %"),
                ("n_points", "points"),
                ("rms_std_resid", "rms std. resid."),
            ],
            left={"arch", "target", "schedule"},
        )
        if jrows
        else "<p class='skip'>no joint fit (needs 2 or more model sizes and 3 or more N_D)</p>"
    )
    return parts


def _section_extrapolation(doc: dict[str, Any]) -> list[str]:
    """The extrapolation-test table."""
    parts: list[str] = []
    parts.append(
        "<h2>Extrapolation test (fit on the smaller N<sub>D</sub>, predict the held-out largest)</h2>"
    )
    xrows = []
    for r in doc["extrapolation"]:
        m = (
            model_label(r["arch"], r.get("n_layers"), r.get("width"))
            if r["arch"] == "fcn" and r["kind"] == "power_law"
            else model_label(r["arch"]) + (f" N_M={r['n_params']:,}" if r["kind"] == "joint" else "")
        )
        xrows.append(
            {
                **r,
                "model": m,
                "nd": r.get("n", r.get("n_train")),
                "band": f"[{_fmt(r['predicted_lo'])}, {_fmt(r['predicted_hi'])}]",
                "_in": "<span class='ok'>yes</span>" if r["inside"] else "<span class='warn'>no</span>",
            }
        )
    parts.append(
        _table(
            xrows,
            [
                ("kind", "fit"),
                ("model", "model"),
                ("target", "target"),
                ("nd", "N_D"),
                ("fit_n_max", "fit up to N_D"),
                ("observed", "observed"),
                ("predicted", "predicted"),
                ("band", "95 % band"),
                ("log_error", "ln(pred/obs)"),
                ("_in", "consistent"),
            ],
            left={"kind", "model", "target"},
        )
        if xrows
        else "<p class='skip'>no extrapolation test (needs 4 or more N_D per curve)</p>"
    )
    return parts


def _section_checks(doc: dict[str, Any]) -> list[str]:
    """The convergence checks and the fits skipped."""
    parts: list[str] = []
    parts.append(_convergence_section(doc.get("convergence") or []))
    if doc["skipped"]:
        parts.append(
            "<h3>Fits skipped</h3><ul>"
            + "".join(
                f"<li>{html.escape(s['what'])} ({html.escape(_where(s))}): {html.escape(s['reason'])}</li>"
                for s in doc["skipped"][:50]
            )
            + "</ul>"
        )
    return parts


def _section_noise(rundir: Path) -> list[str]:
    """The noise-robustness table, when the run has noise.parquet."""
    parts: list[str] = []
    noise = rd.noise_path(rundir)
    if noise.exists():
        from moirescale.analysis.figures import NotEnoughData, noise_table

        try:
            nt = noise_table(noise)
            parts.append("<h2>Noise robustness</h2>")
            parts.append(
                _table(
                    nt.to_dict("records"),
                    [
                        ("arch", "arch"),
                        ("n_layers", "n_l"),
                        ("width", "n_n"),
                        ("target", "target"),
                        ("n_train", "N_D"),
                        ("noise_kind", "noise"),
                        ("noise_level", "level"),
                        ("gm", "MSE (geom. mean)"),
                        ("n_r", "N_r"),
                    ],
                    left={"arch", "target", "noise_kind"},
                )
            )
        except (NotEnoughData, OSError, ValueError) as e:
            parts.append(f"<p class='skip'>{rd.NOISE} unreadable: {html.escape(str(e))}</p>")
    return parts


def _section_provenance(rundir: Path, doc: dict[str, Any]) -> list[str]:
    """Dataset, sweep config and software versions."""
    parts: list[str] = []
    parts.append("<h2>Dataset</h2>")
    if rd.dataset_path(rundir).exists():
        try:
            info = rd.read_dataset(rundir)
            parts.append(f"<pre>{html.escape(json.dumps(info, indent=2))}</pre>")
        except UserError as e:
            parts.append(f"<p class='skip'>{rd.DATASET} unreadable: {html.escape(str(e))}</p>")
    else:
        parts.append(f"<p class='skip'>no {rd.DATASET} in the run directory</p>")
    parts.append("<h2>Sweep config</h2>")
    cfg = rd.config_path(rundir)
    parts.append(
        f"<pre>{html.escape(cfg.read_text())}</pre>"
        if cfg.exists()
        else f"<p class='skip'>no {rd.CONFIG} in the run directory</p>"
    )
    parts.append("<h2>Software</h2>")
    sw = software_versions()
    sw["git commit"] = git_commit()
    sw["fit settings"] = json.dumps(doc["settings"])
    parts.append(
        _table(
            [{"k": k, "v": v} for k, v in sw.items()], [("k", "component"), ("v", "version")], left={"k", "v"}
        )
    )
    return parts


def write_report(
    an: Analysis,
    rundir: str | os.PathLike[str],
    figures: dict[str, dict[str, Any]],
    results_df: pd.DataFrame,
    lead: list[str] | None = None,
) -> Path:
    """Write ``RUNDIR/report.html`` atomically."""
    path = rd.report_path(rundir)
    atomic_write(path, build_report(an, rundir, figures, results_df, lead))
    return path


def fit_and_report(
    rundir: str | os.PathLike[str], settings: Any = None, n_subsets: int = 50,
    lead: Callable[[], list[str]] | None = None,
) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Fit the results of ``rundir``, draw every figure the data supports and write ``fits.json`` and
    ``report.html``: what ``moirescale report`` runs, for callers in Python (the demo).

    ``settings``: a :class:`~moirescale.analysis.fits.FitSettings` (default: its defaults). Returns the
    report's path and :func:`~moirescale.analysis.figures.make_figures`' answer (drawn or skipped).
    """
    from moirescale.analysis.figures import make_figures
    from moirescale.analysis.fits import FitSettings
    from moirescale.analysis.pipeline import analyze, rundir_mean_guess, write_fits
    from moirescale.stats import config_run_grids, load_results, rows_by_grid

    df = load_results(rundir)  # as recorded: the report counts runs in it
    by_grid = rows_by_grid(df, config_run_grids(rundir))  # the analysis counts a shared run in each grid
    an = analyze(by_grid, settings if settings is not None else FitSettings(), rundir_mean_guess(rundir))
    write_fits(rundir, an)
    figs = make_figures(an, rundir, n_subsets=n_subsets)
    return write_report(an, rundir, figs, df, lead() if lead is not None else None), figs


def build_variants_report(spec: Any, variants: pd.DataFrame, points: pd.DataFrame, png: str | Path) -> str:
    """The page of ``moirescale compare-variants``: the alpha_D-vs-4/d figure and the two tables.

    ``spec`` is a :class:`moirescale.analysis.variants.CompareSpec`; ``variants`` and ``points`` are what
    ``variants_table`` and ``alpha_points`` of that module return.
    """
    from moirescale.analysis.variants import budget_text

    ests = [c[2:] for c in variants.columns if c.startswith("d_") and not c.endswith(("_lo", "_hi"))]
    vrows = []
    for r in variants.to_dict("records"):
        for e in ests:
            r[f"_{e}"] = f"{_fmt(r[f'd_{e}'])} [{_fmt(r[f'd_{e}_lo'])}, {_fmt(r[f'd_{e}_hi'])}]"
        vrows.append(r)
    prows = []
    for r in points.to_dict("records"):
        r["a_i"] = f"[{_fmt(r['alpha_lo'])}, {_fmt(r['alpha_hi'])}]"
        r["x_i"] = f"[{_fmt(r['four_over_d_lo'])}, {_fmt(r['four_over_d_hi'])}]"
        r["_paper"] = _paper_verdict(r["alpha"], r["alpha_lo"], r["alpha_hi"])
        r["_budget"] = budget_text(r)
        prows.append(r)
    vcols = [("variant", "variant"), ("description", "description"), ("size_px", "px"), ("origin", "origin"),
             ("start", "start"), ("jperp", "J_perp"), ("channels", "channels"), ("n", "n (d)")]
    pcols = [("variant", "variant"), ("target", "target"), ("model", "model"), ("alpha", "alpha_D"),
             ("a_i", "95 %"), ("four_over_d", f"4/d ({spec.estimator})"), ("x_i", "95 %"),
             ("n_range", "N_D range"), ("_budget", "budget check"), ("_paper", "paper: 1-2 (&le;2.3)")]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>moirescale variants: {html.escape(spec.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Dataset variants: {html.escape(spec.name)}</h1>",
        f"<p>{html.escape(spec.description)}</p>" if spec.description else "",
        f"<p>Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. "
        "<span id='images-status' data-loaded='-1' data-total='-1'>figures not checked (no script)</span>"
        "</p>",
        "<p>Theory (Sharma &amp; Kaplan 2022): regression on a data manifold of intrinsic dimension d scales "
        "as &epsilon; &prop; N<sub>D</sub><sup>&minus;4/d</sup>. Each point is one variant, target and model "
        "family (its largest model); &alpha;<sub>D</sub> intervals from the run's fits, 4/d intervals from "
        "the bootstrap interval of d (<code>moirescale dimension</code>).</p>",
        f"<figure>{_img(str(png), 'alpha_D vs 4/d')}<figcaption>Measured &alpha;<sub>D</sub> against 4/d "
        "(dashed: equality; grey: the paper's 1&ndash;2; open marker: the curve's budget check failed, "
        "so its slope is partly the optimiser's).</figcaption></figure>",
        "<h2>Variants</h2>",
        _table(vrows, vcols + [(f"_{e}", f"d ({e}) [95 %]") for e in ests],
               left={"variant", "description", "origin", "start", "jperp", "channels"}),
        "<h2>&alpha;<sub>D</sub> and 4/d</h2>",
        _table(prows, pcols, left={"variant", "target", "model"}),
        _SCRIPT + "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_variants_report(
    out: str | os.PathLike[str], spec: Any, variants: pd.DataFrame, points: pd.DataFrame, png: str | Path
) -> Path:
    """Write ``OUT/compare.html`` atomically."""
    return atomic_write(Path(out) / "compare.html", build_variants_report(spec, variants, points, png))
