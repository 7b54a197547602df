"""Compare dataset variants: measured alpha_D against the 4/d that the images' intrinsic dimension predicts.

For regression on a data manifold of intrinsic dimension d, theory gives eps ~ N_D^(-4/d) (Sharma & Kaplan,
JMLR 23 (2022); Bahri et al., arXiv 2102.06701). A *variant* is one dataset recipe (image origin, start state,
channels, ...) with a run of its own; a spec file lists them:

.. code-block:: yaml

    name: variants-32px
    estimator: twonn              # which d sets the x axis (twonn or mle); the table shows both
    variants:
      - name: default
        description: random origin, seeded start, top layer
        run: runs/default         # run directory with fits.json (`moirescale fit RUNDIR`), a fits.json,
                                  # or a list of them (e.g. the networks' run and the feature baseline's)
        dimension: dims/default.json   # `moirescale dimension STORE --json > dims/default.json`
      - name: fss
        description: fixed origin, shared start, net magnetisation
        run: runs/fss
        store: data/fss           # no dimension file: estimated here (split, channels, n as for `dimension`)
        channels: net

Relative paths are relative to the spec file. :func:`compare_variants` gathers the d estimates and the fits,
then writes the figure (:func:`moirescale.analysis.figures.fig_alpha_vs_dimension`), ``points.csv`` (one row
per variant x target x family), ``variants.csv`` (one row per variant), ``variants.md`` (both tables, for
docs/results.md) and a self-contained ``compare.html``.

Which alpha_D stands for a family: the fit of its largest model (largest N_M) on clean-trained data
(``noise_train == 0``) of the main schedule ("adjustable" if present), since alpha_D grows with N_M and the
largest model is the nearest to the data-limited exponent that 4/d predicts.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moirescale import rundir as rd
from moirescale.analysis.convergence import curve_check
from moirescale.data.dimension import ESTIMATORS
from moirescale.errors import UserError
from moirescale.models import model_label

MAIN_SCHEDULE = "adjustable"
TARGET_ORDER = ("theta", "J", "D", "all")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantEntry(_Strict):
    """One variant: its run (fits) and where its intrinsic dimension comes from."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]+$")]
    description: str = ""
    run: str | Annotated[list[str], Field(min_length=1)]  # run dir(s) holding fits.json, or fits.json path(s)
    dimension: str | None = None  # `moirescale dimension --json` output
    store: str | None = None  # estimate d from this store when no dimension file is given
    split: Literal["train", "val", "test"] = "train"
    channels: str = "top"
    n: Annotated[int, Field(gt=0)] | None = None
    grids: list[str] | None = None  # use only fits of these sweep grids (default: every grid of the run)

    @model_validator(mode="after")
    def _has_dimension_source(self) -> VariantEntry:
        if self.dimension is None and self.store is None:
            raise ValueError("give dimension (a `moirescale dimension --json` file) or store (to estimate d)")
        return self


class CompareSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]+$")]
    description: str = ""
    estimator: Literal[ESTIMATORS] = "twonn"  # type: ignore[valid-type]
    variants: list[VariantEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CompareSpec:
        names = [v.name for v in self.variants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dup)}")
        return self


@dataclass
class Variant:
    """A variant's spec entry with what was read for it: d estimates, the alpha_D fits, the store's keys."""

    entry: VariantEntry
    dimension: dict[str, Any]
    fits: list[dict[str, Any]]
    keys: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)  # the runs' budget checks (fits.json)


def load_spec(path: str | os.PathLike[str]) -> tuple[CompareSpec, Path]:
    """Read and validate a variants spec; return it and the folder its relative paths start from."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"variants spec not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{p}: cannot be read as text: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{p}: the top level must be a mapping (name:, variants:)")
    try:
        spec = CompareSpec.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        raise UserError(f"{p}: {loc}: {msg}") from None
    return spec, p.resolve().parent


def _resolve(base: Path, p: str) -> Path:
    q = Path(os.path.expanduser(p))
    return q if q.is_absolute() else base / q


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} {path} is not readable JSON: {exc}") from None


def _check_dimension(doc: Any, where: str) -> dict[str, Any]:
    est = doc.get("estimators") if isinstance(doc, dict) else None
    if not isinstance(est, dict) or not est:
        raise UserError(f"{where}: not a `moirescale dimension --json` document (no estimators)")
    for name, e in est.items():
        if not (isinstance(e, dict) and all(isinstance(e.get(k), int | float) for k in ("d", "lo", "hi"))):
            raise UserError(f"{where}: estimator {name!r} needs numbers d, lo and hi")
        if not 0 < e["lo"] <= e["d"] <= e["hi"]:
            raise UserError(f"{where}: estimator {name!r} needs 0 < lo <= d <= hi, got {e}")
    return doc


def _read_fits(run: Path, variant: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(alpha fits, budget checks) of a run's fits.json."""
    fits_path = run if run.suffix == ".json" else rd.fits_path(run)
    if not fits_path.is_file() and rd.results_path(run).exists():
        raise UserError(f"variant {variant}: {fits_path} does not exist; run `moirescale fit {run}` first")
    try:
        doc = rd.read_fits(fits_path, f"variant {variant}: fits file")
    except UserError as exc:
        raise UserError(f"variant {variant}: {exc}") from None
    fits = doc["fits"]
    checks = doc.get("convergence")
    return fits, checks if isinstance(checks, list) else []


def _store_keys(store: Path | None) -> dict[str, Any]:
    """The variant keys of a store's dataset config (defaults where the config leaves them out)."""
    if store is None or not (store / "manifest.json").is_file():
        return {}
    try:
        cfg = json.loads((store / "manifest.json").read_text()).get("config", {})
    except (OSError, ValueError):
        return {}
    img, proto = cfg.get("image", {}), cfg.get("protocol", {})
    return {
        "size_px": img.get("size_px"),
        "origin": img.get("origin", "random"),
        "start": proto.get("start", "seeded"),
        "jperp": cfg.get("jperp", {}).get("mode", "scale"),
        "n_anneal": proto.get("n_anneal"),
    }


def gather(spec: CompareSpec, base: Path, log: Any = None) -> list[Variant]:
    """Read (or estimate) every variant's d and read its fits. ``log``: a callable for progress lines."""
    from moirescale.data.dimension import store_dimension

    out = []
    for v in spec.variants:
        fits: list[dict[str, Any]] = []
        checks: list[dict[str, Any]] = []
        for r in [v.run] if isinstance(v.run, str) else v.run:
            f, c = _read_fits(_resolve(base, r), v.name)
            fits, checks = fits + f, checks + c
        if v.grids is not None:
            fits = [f for f in fits if f.get("grid") in v.grids]
        store = _resolve(base, v.store) if v.store else None
        if v.dimension is not None:
            dpath = _resolve(base, v.dimension)
            dim = _check_dimension(_read_json(dpath, f"variant {v.name}: dimension file"), str(dpath))
            if store is None and isinstance(dim.get("store"), str):
                store = Path(dim["store"])
        else:
            if log is not None:
                log(f"variant {v.name}: estimating d on {store} ({v.split}, {v.channels})")
            res, meta = store_dimension(store, v.split, v.channels, v.n)
            dim = {**res.to_dict(), **meta}
        if spec.estimator not in dim["estimators"]:
            raise UserError(
                f"variant {v.name}: the dimension has no {spec.estimator!r} estimate "
                f"(it has {', '.join(dim['estimators'])})"
            )
        keys = _store_keys(store)
        keys["channels"] = dim.get("channels", v.channels)
        out.append(Variant(v, dim, fits, keys, checks))
    return out


def _family_fits(fits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One alpha_D fit per (arch, target): the largest model's, clean-trained, main schedule."""
    d = [
        f
        for f in fits
        if f.get("variable") == "n_train" and not f.get("noise_train") and f.get("alpha") is not None
    ]
    scheds = {f.get("schedule") for f in d}
    if MAIN_SCHEDULE in scheds:
        d = [f for f in d if f.get("schedule") == MAIN_SCHEDULE]
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for f in d:
        key = (f["arch"], f["target"])
        size = (f.get("n_params") or 0, f.get("n_points") or 0)
        old = best.get(key)
        if old is None or size > (old.get("n_params") or 0, old.get("n_points") or 0):
            best[key] = f
    return list(best.values())


def _fits_number(v: Any) -> float:
    """A fits.json number (validated by :func:`moirescale.rundir.read_fits`; null: NaN)."""
    return float("nan") if v is None else float(v)


def _fit_model(f: dict[str, Any]) -> str:
    """A fit's model: :func:`moirescale.models.model_label`, with N_M for an arch named without its size."""
    label = model_label(f["arch"], f.get("n_layers"), f.get("width"))
    return label if f["arch"] == "fcn" else f"{label} (N_M={f.get('n_params')})"


def alpha_points(variants: list[Variant], estimator: str) -> pd.DataFrame:
    """One row per variant x target x family: alpha_D with its interval, d and x = 4/d with theirs, and the
    curve's budget check (``budget_ratio``, ``converged``: None without a check)."""
    rows = []
    for v in variants:
        e = v.dimension["estimators"][estimator]
        for f in _family_fits(v.fits):
            check = curve_check(v.checks, f) or {}
            rows.append(
                {
                    "variant": v.entry.name,
                    "target": f["target"],
                    "family": f["arch"],
                    "model": _fit_model(f),
                    "n_params": f.get("n_params"),
                    "alpha": float(f["alpha"]),
                    "alpha_lo": _fits_number(f.get("alpha_lo")),
                    "alpha_hi": _fits_number(f.get("alpha_hi")),
                    "n_range": f"{f.get('n_min')}-{f.get('n_max')}",
                    "budget_ratio": check.get("ratio"),
                    "converged": check.get("converged"),
                    "estimator": estimator,
                    "d": float(e["d"]),
                    "d_lo": float(e["lo"]),
                    "d_hi": float(e["hi"]),
                    "four_over_d": 4.0 / e["d"],
                    "four_over_d_lo": 4.0 / e["hi"],
                    "four_over_d_hi": 4.0 / e["lo"],
                }
            )
    df = pd.DataFrame(rows)
    if df.empty:
        raise UserError("no variant has an alpha_D fit (variable n_train) in its fits.json")
    rank = {v.entry.name: i for i, v in enumerate(variants)}
    df["_v"] = df["variant"].map(rank)
    df["_t"] = df["target"].map(lambda t: TARGET_ORDER.index(t) if t in TARGET_ORDER else len(TARGET_ORDER))
    return df.sort_values(["_v", "family", "_t"]).drop(columns=["_v", "_t"]).reset_index(drop=True)


def variants_table(variants: list[Variant]) -> pd.DataFrame:
    """One row per variant: its description, the store's variant keys, and every d estimate."""
    rows = []
    for v in variants:
        r: dict[str, Any] = {"variant": v.entry.name, "description": v.entry.description}
        for k in ("size_px", "origin", "start", "jperp", "channels"):
            r[k] = v.keys.get(k)
        r["n"] = v.dimension.get("n")
        for name, e in v.dimension["estimators"].items():
            r[f"d_{name}"] = float(e["d"])
            r[f"d_{name}_lo"] = float(e["lo"])
            r[f"d_{name}_hi"] = float(e["hi"])
        rows.append(r)
    return pd.DataFrame(rows)


def _blank(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def budget_text(r: Any) -> str:
    """A point's budget check in words: "0.48 (not converged)", "0.95" or "–" without a check."""
    if _blank(r.get("budget_ratio")):
        return "–"
    return f"{r['budget_ratio']:.2f}" + ("" if r.get("converged") else " (not converged)")


def markdown_tables(vt: pd.DataFrame, pts: pd.DataFrame, estimator: str) -> str:
    """The variants table and the alpha_D-vs-4/d table as Markdown (for docs/results.md)."""
    ests = [c[2:] for c in vt.columns if c.startswith("d_") and not c.endswith(("_lo", "_hi"))]
    keys = ["variant", "description", "origin", "start", "jperp", "channels", "n"]
    head = [*keys[:4], "J_perp", *keys[5:], *(f"d ({e})" for e in ests)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in vt.iterrows():
        ds = [f"{_num(r[f'd_{e}'])} [{_num(r[f'd_{e}_lo'])}, {_num(r[f'd_{e}_hi'])}]" for e in ests]
        cells = [*(r[k] for k in keys), *ds]
        lines.append("| " + " | ".join("–" if _blank(c) else str(c) for c in cells) + " |")
    lines += ["", f"| variant | target | model | α_D [95 %] | 4/d ({estimator}) [95 %] | budget check |"]
    lines.append("|---|---|---|---|---|---|")
    for _, r in pts.iterrows():
        a = f"{r['alpha']:.2f} [{r['alpha_lo']:.2f}, {r['alpha_hi']:.2f}]"
        x = f"{r['four_over_d']:.2f} [{r['four_over_d_lo']:.2f}, {r['four_over_d_hi']:.2f}]"
        lines.append(f"| {r['variant']} | {r['target']} | {r['model']} | {a} | {x} | {budget_text(r)} |")
    return "\n".join(lines) + "\n"


def compare_variants(
    spec_path: str | os.PathLike[str], out: str | os.PathLike[str], log: Any = None
) -> dict[str, Path]:
    """Gather, draw and tabulate a variants spec into the folder ``out``; return the files written."""
    from moirescale.analysis.figures import _save, fig_alpha_vs_dimension
    from moirescale.analysis.report import write_variants_report
    from moirescale.fsio import atomic_write

    spec, base = load_spec(spec_path)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    variants = gather(spec, base, log)
    pts = alpha_points(variants, spec.estimator)
    vt = variants_table(variants)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: Path(v) for k, v in _save(fig_alpha_vs_dimension(pts), out, "alpha_vs_dimension").items()}
    files["points"] = atomic_write(out / "points.csv", pts.to_csv(index=False))
    files["variants"] = atomic_write(out / "variants.csv", vt.to_csv(index=False))
    files["markdown"] = atomic_write(out / "variants.md", markdown_tables(vt, pts, spec.estimator))
    dims = {v.entry.name: v.dimension for v in variants}
    files["dimensions"] = atomic_write(out / "dimensions.json", json.dumps(dims, indent=1))
    files["html"] = write_variants_report(out, spec, vt, pts, files["png"])
    return files
