"""Run every fit the data supports and collect them for ``fits.json``, the figures and the report.

A curve that cannot be fitted (too few points, ...) is listed under ``skipped`` with the reason instead of
stopping the whole analysis; only when *nothing* can be fitted is that an error.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moirescale import rundir as rd
from moirescale.analysis.convergence import convergence_table, curve_check, split_checks
from moirescale.analysis.extrapolate import extrapolate_joint, extrapolate_power_law
from moirescale.analysis.fits import FitSettings, PowerLawFit, _to_python, fit_power_law, invert_power_law
from moirescale.analysis.joint import JointFit, fit_joint, invert_joint
from moirescale.analysis.trend import SizeTrendFit, fit_alpha_vs_size
from moirescale.errors import UserError
from moirescale.stats import load_results, point_stats

CURVE_D_KEYS = ["arch", "n_layers", "width", "n_params", "target", "schedule", "grid", "noise_train"]
CURVE_M_KEYS = ["arch", "n_layers", "target", "n_train", "schedule", "grid", "noise_train"]
FAMILY_KEYS = ["arch", "target", "schedule", "grid", "noise_train"]
FITS_VERSION = 1
# A data curve whose MSE at its largest N_D is above this fraction of the mean guess's has learnt next to
# nothing (R^2 < 0.1): its alpha_D describes the approach to the mean, not a learning curve.
NEAR_MEAN_GUESS = 0.9


def at_mean_guess(variance_left: float | None) -> bool:
    """Whether a curve's ``variance_left`` (None: unknown) says it has learnt next to nothing."""
    return variance_left is not None and variance_left >= NEAR_MEAN_GUESS


def _meta(keys: list[str], values: tuple) -> dict[str, Any]:
    out = {}
    for k, v in zip(keys, values, strict=True):
        out[k] = (
            None
            if (v is None or (not isinstance(v, str) and pd.isna(v)))
            else (v if isinstance(v, str) else (float(v) if k == "noise_train" else int(v)))
        )
    return out


@dataclass
class Analysis:
    stats: pd.DataFrame
    settings: FitSettings
    curves_d: list[tuple[dict[str, Any], PowerLawFit]] = field(default_factory=list)
    curves_m: list[tuple[dict[str, Any], PowerLawFit]] = field(default_factory=list)
    size_trends: list[tuple[dict[str, Any], SizeTrendFit]] = field(default_factory=list)
    joints: list[tuple[dict[str, Any], JointFit]] = field(default_factory=list)
    joint_extrap: list[tuple[dict[str, Any], JointFit, list[dict[str, Any]]]] = field(default_factory=list)
    extrapolation: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    convergence: list[dict[str, Any]] = field(default_factory=list)  # budget checks (analysis/convergence.py)
    mean_guess: dict[str, float] = field(default_factory=dict)  # label -> MSE of guessing its mean

    def to_dict(self) -> dict[str, Any]:
        """The ``fits.json`` document (schema in docs/analysis.md)."""
        fits_out = []
        for variable, curves in (("n_train", self.curves_d), ("n_params", self.curves_m)):
            for meta, fit in curves:
                d = {
                    "arch": meta["arch"],
                    "n_layers": meta["n_layers"],
                    "width": meta.get("width"),
                    "n_params": meta.get("n_params"),
                    "target": meta["target"],
                    "variable": variable,
                    "n_train": meta.get("n_train"),
                    "schedule": meta["schedule"],
                    "grid": meta["grid"],
                    "noise_train": meta["noise_train"],
                }
                d.update(fit.to_dict())
                if variable == "n_train":
                    d["mean_guess_mse"] = meta.get("mean_guess_mse")
                    d["variance_left"] = meta.get("variance_left")
                d["points"] = [
                    {"n": int(n), "gm": math.exp(y), "log_se": float(s)}
                    for n, y, s in zip(fit.n, fit.y, fit.sigma, strict=True)
                ]
                fits_out.append(d)
        trends = []
        for meta, t in self.size_trends:
            d = dict(meta)
            d.update(t.to_dict())
            d["points"] = [
                {
                    "n_params": int(p),
                    "alpha": float(a),
                    "alpha_lo": float(lo),
                    "alpha_hi": float(hi),
                    "in_fit": bool(u),
                }
                for p, a, lo, hi, u in zip(t.n_params, t.alpha, t.alpha_lo, t.alpha_hi, t.used, strict=True)
            ]
            trends.append(d)
        joints = []
        for meta, j in self.joints:
            d = dict(meta)
            d.update(j.to_dict())
            joints.append(d)
        s = asdict(self.settings)
        return {
            "version": FITS_VERSION,
            "level": self.settings.level,
            "settings": s,
            "fits": fits_out,
            "alpha_vs_size": trends,
            "joint": joints,
            "extrapolation": self.extrapolation,
            "skipped": self.skipped,
            "convergence": self.convergence,
        }


def _loss(st: FitSettings) -> dict[str, Any]:
    """The loss keywords of every fit function, from the settings."""
    return {"loss": st.loss, "huber_delta": st.huber_delta}


def _curve_arrays(g: pd.DataFrame, x: str) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Scaling variable, log losses and realization labels of a curve's points with successful runs."""
    g = g[g["n_r"] > 0].sort_values(x)
    return g[x].to_numpy(dtype=float), list(g["logs"]), list(g["labels"])


def interval_covers(g: pd.DataFrame) -> str:
    """What a curve's bootstrap interval includes: the spread of what varies between its realizations."""
    g = g[g["n_r"] > 1]
    if g.empty:
        return "residual scatter only (one realization per point)"
    if (g["n_data_seeds"] == 0).any():
        return "realizations (training subset not recorded: no data_seed column)"
    if (g["n_data_seeds"] == 1).all():
        return "initialisation only (the realizations shared one training subset)"
    return "training subset and initialisation"


def analyze(
    df: pd.DataFrame, settings: FitSettings | None = None, mean_guess: Mapping[str, float] | None = None
) -> Analysis:
    """Statistics and every fit the results support. UserError if no curve at all can be fitted.

    Gather (per-point statistics of the curve rows), then compute: the N_D curves (alpha_D and their
    extrapolation), the model-size curves (alpha_M), and per family alpha_D vs N_M and the joint law.
    ``mean_guess``: each label's MSE when its mean is guessed (:func:`moirescale.labels.mean_guess_mse`);
    with it each N_D curve carries ``variance_left``, its MSE at the largest N_D over the mean guess's.
    """
    st = settings or FitSettings()
    curve_rows, _ = split_checks(df)  # budget-check rows are compared with their curve, never fitted
    stats = point_stats(curve_rows)
    check_bootstrap_budget(st, stats, curve_rows)
    an = Analysis(stats=stats, settings=st, convergence=convergence_table(df),
                  mean_guess=dict(mean_guess or {}))
    _fit_data_curves(an, stats)
    _fit_size_curves(an, stats)
    _fit_families(an, stats)
    if not an.curves_d and not an.curves_m:
        reasons = sorted({s["reason"] for s in an.skipped}) or ["no curve has points with successful runs"]
        raise UserError("no scaling curve could be fitted: " + "; ".join(reasons[:3]))
    return an


# What the bootstraps cost on this machine (2 busy cores): one nonlinear refit (a floor or the joint law)
# measured at 2.5 ms, taken as 5 ms; a linear replicate's joint resampling holds ~3 (n_boot, K) float64 arrays
# for K realizations.
NONLINEAR_REFIT_S = 0.005
MAX_BOOTSTRAP_S = 3600.0
MAX_BOOTSTRAP_BYTES = 2 * 2**30
NOTE_BOOTSTRAP_S = 60.0


def check_bootstrap_budget(st: FitSettings, stats: pd.DataFrame, rows: pd.DataFrame) -> float:
    """Refuse bootstrap settings whose time (the nonlinear refits) or memory (the joint resampling over
    realizations) this machine cannot afford; say how long the fits take when it is over a minute.

    Returns the estimated seconds of nonlinear refits. UserError naming the option and the limit otherwise.
    """
    k = int(rows["realization"].nunique()) if "realization" in rows and len(rows) else max(1, len(rows))
    nbytes = 3 * 8 * max(st.n_boot, st.n_boot_nonlinear) * max(k, 1)
    if nbytes > MAX_BOOTSTRAP_BYTES:
        raise UserError(
            f"--bootstrap {max(st.n_boot, st.n_boot_nonlinear)} over {k} realizations needs about "
            f"{nbytes / 2**30:.1f} GiB for its resampling (limit {MAX_BOOTSTRAP_BYTES / 2**30:g} GiB); "
            "lower --bootstrap/--bootstrap-nonlinear"
        )
    if stats.empty:
        return 0.0
    n_nonlinear = stats.groupby(FAMILY_KEYS, dropna=False).ngroups  # the joint law, one per family
    if st.floor:
        n_nonlinear += stats.groupby(CURVE_D_KEYS, dropna=False).ngroups
        n_nonlinear += stats.groupby(CURVE_M_KEYS, dropna=False).ngroups
    seconds = n_nonlinear * st.n_boot_nonlinear * NONLINEAR_REFIT_S
    if seconds > MAX_BOOTSTRAP_S:
        raise UserError(
            f"--bootstrap-nonlinear {st.n_boot_nonlinear} over {n_nonlinear} nonlinear fits takes about "
            f"{seconds / 60:.0f} min on this machine (limit {MAX_BOOTSTRAP_S / 60:.0f} min); lower it"
        )
    if seconds > NOTE_BOOTSTRAP_S:
        print(f"note: {n_nonlinear} nonlinear fits x {st.n_boot_nonlinear} bootstrap refits: about "
              f"{seconds / 60:.0f} min", file=sys.stderr, flush=True)
    return seconds


def _fit_data_curves(an: Analysis, stats: pd.DataFrame) -> None:
    """alpha_D: one curve per model (and target, schedule, grid), varying N_D; plus its extrapolation test."""
    st = an.settings
    n_boot = st.n_boot if not st.floor else st.n_boot_nonlinear
    for key, g in stats.groupby(CURVE_D_KEYS, dropna=False, sort=True):
        meta = _meta(CURVE_D_KEYS, key)
        n, logs, labels = _curve_arrays(g, "n_train")
        try:
            fit = fit_power_law(
                n, logs, floor=st.floor, n_boot=n_boot, fit_range=st.fit_range, seed=st.seed, level=st.level,
                labels=labels, **_loss(st),
            )
        except UserError as e:
            an.skipped.append({"what": "alpha_D", **meta, "reason": str(e)})
            continue
        fit.covers = interval_covers(g)
        an.curves_d.append((meta | _variance_left(g, meta["target"], an.mean_guess), fit))
        # extrapolation: fit on the smaller N_D, predict the largest held out
        inside = np.ones(n.size, dtype=bool)
        if st.fit_range is not None:
            inside = (n >= st.fit_range[0]) & (n <= st.fit_range[1])
        try:
            rows = extrapolate_power_law(
                n[inside],
                [v for v, k in zip(logs, inside, strict=True) if k],
                floor=st.floor,
                seed=st.seed,
                level=st.level,
                n_boot=n_boot,
                labels=[a for a, k in zip(labels, inside, strict=True) if k],
                **_loss(st),
            )
            for r in rows:
                an.extrapolation.append({"kind": "power_law", **meta, **r})
        except UserError as e:
            an.skipped.append({"what": "extrapolation", **meta, "reason": str(e)})


def _variance_left(g: pd.DataFrame, target: str, mean_guess: Mapping[str, float]) -> dict[str, float | None]:
    """A curve's geometric-mean MSE at its largest N_D over the MSE of guessing the mean (target ``all``: the
    mean over the labels, as its MSE is); None where the mean guess is not known."""
    if target == "all":
        guess = float(np.mean(list(mean_guess.values()))) if mean_guess else None
    else:
        guess = mean_guess.get(target)
    last = g.loc[g["n_train"].idxmax(), "gm"]
    if guess is None or not guess > 0 or not math.isfinite(last):
        return {"mean_guess_mse": guess, "variance_left": None}
    return {"mean_guess_mse": guess, "variance_left": float(last) / guess}


def _fit_size_curves(an: Analysis, stats: pd.DataFrame) -> None:
    """alpha_M: one curve per depth (and N_D, target, ...), varying the model size."""
    st = an.settings
    for key, g in stats.groupby(CURVE_M_KEYS, dropna=False, sort=True):
        meta = _meta(CURVE_M_KEYS, key)
        n, logs, labels = _curve_arrays(g, "n_params")
        if np.unique(n).size < 2:
            continue  # a single model size is not a model-size curve; nothing to report
        try:
            fit = fit_power_law(
                n, logs, n_boot=st.n_boot, seed=st.seed, level=st.level, labels=labels, **_loss(st)
            )
        except UserError as e:
            an.skipped.append({"what": "alpha_M", **meta, "reason": str(e)})
            continue
        fit.covers = interval_covers(g)
        an.curves_m.append((meta, fit))


def _fit_families(an: Analysis, stats: pd.DataFrame) -> None:
    """Per family (arch, target, ...): alpha_D vs N_M over its N_D curves, and the joint law with its
    extrapolation test."""
    for key, g in stats.groupby(FAMILY_KEYS, dropna=False, sort=True):
        meta = _meta(FAMILY_KEYS, key)
        _fit_size_trend(an, meta)
        _fit_joint_family(an, meta, g)


def _fit_size_trend(an: Analysis, meta: dict[str, Any]) -> None:
    """alpha_D vs N_M of one family, from its fitted N_D curves (several curves per size are all kept)."""
    members = [
        (m, f)
        for m, f in an.curves_d
        if all(m[k] == meta[k] for k in FAMILY_KEYS) and m["n_params"] is not None
    ]
    if len({m["n_params"] for m, _ in members}) < 2:
        return
    try:
        sizes, fits = [m["n_params"] for m, _ in members], [f for _, f in members]
        t = fit_alpha_vs_size(sizes, fits, seed=an.settings.seed, **_loss(an.settings))
        an.size_trends.append((meta, t))
    except UserError as e:
        an.skipped.append({"what": "alpha_D vs N_M", **meta, "reason": str(e)})


def _fit_joint_family(an: Analysis, meta: dict[str, Any], g: pd.DataFrame) -> None:
    """The joint law L(N_M, N_D) of one family's points, and its extrapolation test."""
    st = an.settings
    g = g[(g["n_r"] > 0) & g["n_params"].notna()]
    if st.fit_range is not None:
        g = g[(g["n_train"] >= st.fit_range[0]) & (g["n_train"] <= st.fit_range[1])]
    if g["n_params"].nunique() < 2:
        return
    nm, nd, logs = g["n_params"].to_numpy(float), g["n_train"].to_numpy(float), list(g["logs"])
    labels = list(g["labels"])
    try:
        j = fit_joint(
            nm, nd, logs, n_boot=st.n_boot_nonlinear, seed=st.seed, level=st.level, labels=labels, **_loss(st)
        )
        an.joints.append((meta, j))
    except UserError as e:
        an.skipped.append({"what": "joint", **meta, "reason": str(e)})
        return
    try:
        jx, rows = extrapolate_joint(
            nm, nd, logs, n_boot=st.n_boot_nonlinear, seed=st.seed, level=st.level, labels=labels, **_loss(st)
        )
        an.joint_extrap.append((meta, jx, rows))
        for r in rows:
            an.extrapolation.append({"kind": "joint", **meta, **r})
    except UserError as e:
        an.skipped.append({"what": "joint extrapolation", **meta, "reason": str(e)})


def fits_json(an: Analysis, indent: int | None = 1) -> str:
    """The ``fits.json`` document as strict JSON: undefined numbers are null, infinite ones "inf"/"-inf"."""
    return json.dumps(_clean_json(an.to_dict()), indent=indent, allow_nan=False, default=_json_default)


def write_fits(rundir: str | os.PathLike[str], an: Analysis) -> Path:
    """Write ``RUNDIR/fits.json`` atomically."""
    return rd.write_fits(rundir, fits_json(an))


def recorded_settings(rundir: str | os.PathLike[str]) -> dict[str, Any]:
    """The fit settings recorded in ``RUNDIR/fits.json`` ({} when there is none or it cannot be read)."""
    try:
        doc = rd.read_fits(rundir)
    except UserError:
        return {}
    settings = doc.get("settings") if isinstance(doc, dict) else None
    return settings if isinstance(settings, dict) else {}


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON serialisable: {type(v)}")


def analyze_rundir(rundir: str | os.PathLike[str], settings: FitSettings | None = None) -> Analysis:
    """:func:`analyze` on ``RUNDIR/results.parquet``, each run in every grid of its config that holds it, with
    the mean guess of the store the sweep trained on (when it is still there)."""
    return analyze(load_results(rundir, by_grid=True), settings, rundir_mean_guess(rundir))


def rundir_mean_guess(rundir: str | os.PathLike[str]) -> dict[str, float]:
    """Each label's MSE when its mean is guessed, from the test labels of the store ``RUNDIR/dataset.json``
    names, or, for the ``--out DIR`` of ``fit TABLE``, as its ``--mean-guess`` recorded in fits.json; empty
    when there is neither or the store is gone or unreadable (the fits do not need it)."""
    from moirescale.data.store import open_store
    from moirescale.labels import mean_guess_mse

    try:
        store = rd.read_dataset(rundir).get("store")
        if not store:
            return _recorded_mean_guess(rundir)
        with open_store(store, checksum=False) as st:  # labels only; the sweep verified the store
            return mean_guess_mse(st)
    except (UserError, OSError, KeyError, ValueError):
        return {}


def _recorded_mean_guess(rundir: str | os.PathLike[str]) -> dict[str, float]:
    """The ``--mean-guess`` that ``fit TABLE`` recorded in ``RUNDIR/fits.json`` (only finite values > 0)."""
    extra = recorded_settings(rundir).get("extra")
    got = extra.get("mean_guess") if isinstance(extra, dict) else None
    if not isinstance(got, dict):
        return {}
    return {str(k): float(v) for k, v in got.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf}


# ----------------------------------------------------------------------------------------------- advise


def advise(an: Analysis, target: str, mse: float, arch: str | None = None) -> dict[str, Any]:
    """What N_D (and N_M) reach a test MSE of ``mse`` for ``target``: from the joint fit of each family,
    or, for a family with one model size, from its per-curve alpha_D fit.
    Intervals are bootstrap percentiles. Each model's answer carries its curve's budget check
    (``budget_check``: ratio and ``converged``, or None): an unconverged curve's slope is partly the step
    budget's, so its N_D holds only for a run trained by the same budget rule; and ``variance_left`` (its MSE
    at the largest N_D over the mean guess's, or None): near 1 the curve has learnt next to nothing."""
    if not (mse > 0 and math.isfinite(mse)):
        raise UserError("--mse must be a positive number")
    answers: list[dict[str, Any]] = []
    fams = {
        (m["arch"], m["schedule"], m["grid"], m["noise_train"])
        for m, _ in an.curves_d
        if m["target"] == target
    }
    if arch is not None:
        fams = {f for f in fams if f[0] == arch}
    if not fams:
        have = sorted({(m["arch"], m["target"]) for m, _ in an.curves_d})
        raise UserError(
            f"no fitted alpha_D curve for target={target!r}"
            + (f", arch={arch!r}" if arch else "")
            + f"; fitted (arch, target): {have}"
        )
    obs_max = float(an.stats["n_train"].max())
    for a, sched, grid, noise in sorted(fams):
        meta = {"arch": a, "target": target, "schedule": sched, "grid": grid, "noise_train": noise}
        joint = next((j for m, j in an.joints if all(m[k] == meta[k] for k in meta)), None)
        curves = [(m, f) for m, f in an.curves_d if all(m[k] == meta[k] for k in meta)]
        if joint is not None:
            ans = invert_joint(joint, mse, [m["n_params"] for m, _ in curves])
        else:
            ans = {"method": "power_law", "per_model": []}
            for m, f in curves:
                r = invert_power_law(f, mse)
                ans["per_model"].append(
                    {
                        "n_params": m["n_params"],
                        "n_layers": m["n_layers"],
                        "width": m["width"],
                        "n_train": r["n"],
                        "n_train_lo": r["n_lo"],
                        "n_train_hi": r["n_hi"],
                        "possible": r["possible"],
                        "floor": f.floor,
                    }
                )
            ans["possible"] = any(p["possible"] for p in ans["per_model"])
        checks = {m["n_params"]: curve_check(an.convergence, m) for m, _ in curves}
        left = {m["n_params"]: m.get("variance_left") for m, _ in curves}
        for p in ans["per_model"]:
            p["extrapolated"] = bool(p["possible"] and p["n_train"] > obs_max)
            p["budget_check"] = checks.get(p["n_params"])
            p["variance_left"] = left.get(p["n_params"])
        answers.append({**meta, **ans})
    return {"target": target, "mse": mse, "max_observed_n_train": obs_max, "answers": _clean_json(answers)}


def _clean_json(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean_json(x) for x in v]
    return _to_python(v)


def format_advice(adv: dict[str, Any]) -> str:
    """Human-readable lines for ``moirescale advise``."""

    def num(v: Any) -> str:
        if v in ("inf", None) or (isinstance(v, float) and not math.isfinite(v)):
            return "unreachable"
        return "<1" if float(v) < 1 else f"{float(v):,.0f}"

    lines = [
        f"target {adv['target']}: test MSE {adv['mse']:g} "
        f"(largest N_D measured: {adv['max_observed_n_train']:,.0f})"
    ]
    for a in adv["answers"]:
        head = f"{a['arch']}" + (f" [{a['schedule']}]" if a["schedule"] else "") + f" via {a['method']} fit"
        lines.append(head)
        if a["method"] == "joint":
            lines.append(
                f"  irreducible floor E = {a['floor']:.3g} (95% {a['floor_interval'][0]:.3g} .. "
                f"{a['floor_interval'][1]:.3g})"
            )
            if not a["possible"]:
                lines.append(f"  impossible: the target MSE {adv['mse']:g} is at or below the fitted floor")
                continue
            nmin, nmm = a["n_train_min"], a["n_params_min"]
            lines.append(
                f"  with an unlimited model: N_D = {num(nmin['n_train'])} "
                f"(95% {num(nmin['interval'][0])} .. {num(nmin['interval'][1])})"
            )
            lines.append(
                f"  with unlimited data: N_M = {num(nmm['n_params'])} "
                f"(95% {num(nmm['interval'][0])} .. {num(nmm['interval'][1])})"
            )
        elif not a["possible"]:
            lines.append(
                f"  impossible: the target MSE {adv['mse']:g} is at or below every model's fitted floor"
            )
        for p in a["per_model"]:
            extra = " (extrapolated beyond the data)" if p.get("extrapolated") else ""
            # a table from elsewhere may have no n_params column: its one model has no size
            model = f"N_M = {p['n_params']:,}" if p.get("n_params") is not None else "the model"
            if p["possible"]:
                lines.append(
                    f"  {model}: N_D = {num(p['n_train'])} "
                    f"(95% {num(p['n_train_lo'])} .. {num(p['n_train_hi'])}){extra}"
                )
            else:
                lines.append(f"  {model}: unreachable (model-size floor above the target)")
            if at_mean_guess(left := p.get("variance_left")):
                lines.append(
                    f"    at the mean guess: its MSE at the largest N_D is {left:.2f} of the mean guess's: "
                    "it has learnt next to nothing, its slope is no learning curve; do not plan by this N_D"
                )
            check = p.get("budget_check")
            if check and not check["converged"]:
                lines.append(
                    f"    not converged: a larger step budget lowered its MSE at N_D = {check['n_train']:,} "
                    f"to {check['ratio']:.2f}x, so its slope is partly the optimiser's; this N_D holds only "
                    "for the same budget rule"
                )
    return "\n".join(lines)
