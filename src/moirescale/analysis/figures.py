"""The paper's figures (and the ones it lacks), drawn from an :class:`~moirescale.analysis.pipeline.Analysis`.

Each ``fig_*`` function returns a matplotlib Figure or raises :class:`NotEnoughData` with the reason;
the driver :func:`make_figures` saves PNG + SVG under ``RUNDIR/figures/`` and lists what was skipped and why.
Log-log axes, fits dashed with their 95 % bands, Okabe-Ito colours plus distinct markers (colour-blind safe).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from moirescale import rundir as rd
from moirescale.analysis.fits import PowerLawFit  # noqa: E402
from moirescale.analysis.pipeline import Analysis  # noqa: E402
from moirescale.fsio import atomic_path, real_dir  # noqa: E402
from moirescale.labels import order_targets
from moirescale.models import ARCH_NAMES, model_label  # noqa: E402
from moirescale.results import read_parquet_file  # noqa: E402
from moirescale.stats import bootstrap_gm, geomean, geometric_stats, mean_log  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LABEL_TEX = {"theta": r"$\theta$", "J": "$J$", "D": "$D$", "all": "all"}
ARCH_NAME = ARCH_NAMES
# Baselines drawn as a reference curve (dashed black) in the data-scaling figures, not as one more model
REFERENCE_ARCHS = ("features",)


class NotEnoughData(Exception):
    """The data cannot support this figure; the message says what is missing."""


def _style(i: int) -> dict[str, Any]:
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[i % len(MARKERS)]}


def main_slice(stats: pd.DataFrame) -> pd.DataFrame:
    """Clean-trained points of the main schedule ('adjustable' if present, else the most common one)."""
    st = stats[(stats["noise_train"] == 0) & (stats["n_r"] > 0)]
    if st.empty:
        raise NotEnoughData("no clean-trained points with successful runs")
    scheds = st["schedule"].value_counts()
    sched = "adjustable" if "adjustable" in scheds.index else scheds.index[0]
    return st[st["schedule"] == sched]


def _targets(st: pd.DataFrame) -> list[str]:
    ts = [t for t in order_targets(st["target"]) if t != "all"]  # a store's own label names
    return ts or sorted(set(st["target"]))


def _fit_for(an: Analysis, row: pd.Series | dict, variable: str = "n_train") -> PowerLawFit | None:
    keys = ["arch", "n_layers", "width", "n_params", "target", "schedule", "grid", "noise_train"]
    if variable == "n_params":
        keys = ["arch", "n_layers", "target", "n_train", "schedule", "grid", "noise_train"]
    curves = an.curves_d if variable == "n_train" else an.curves_m

    def norm(v: Any) -> Any:
        return None if v is None or (not isinstance(v, str) and pd.isna(v)) else v

    for meta, fit in curves:
        if all(norm(meta[k]) == norm(row[k]) for k in keys):
            return fit
    return None


def _model_label(r: pd.Series | dict) -> str:
    """An FCN by its size (:func:`moirescale.models.model_label`); another arch by name (its size, where
    several are drawn, from :func:`_size_suffix`)."""
    if r["arch"] == "fcn":
        return model_label("fcn", r["n_layers"], r["width"])
    return ARCH_NAME.get(r["arch"], r["arch"])


def _draw_fit(ax, fit: PowerLawFit | None, color: str, n_lo: float, n_hi: float) -> str:
    if fit is None:
        return ""
    n = np.geomspace(n_lo, n_hi, 60)
    ax.plot(n, fit.predict(n), "--", color=color, lw=1.2)
    lo, hi = fit.band(n)
    ax.fill_between(n, lo, hi, color=color, alpha=0.15, lw=0)
    a_lo, a_hi = fit.interval(1)
    return f" (α={fit.alpha:.2f} [{a_lo:.2f}, {a_hi:.2f}])"


def _points(ax, g: pd.DataFrame, x: str, style: dict[str, Any], label: str, fill: bool = True) -> None:
    g = g.sort_values(x)
    err = g["gm_se"].fillna(0.0).to_numpy()
    ax.errorbar(
        g[x],
        g["gm"],
        yerr=err,
        ls="none",
        capsize=2,
        ms=5,
        label=label,
        mfc=style["color"] if fill else "white",
        **style,
    )


def _short_number(v: float, _pos: object = None) -> str:
    """Compact tick label: 500, 2k, 20k, 1M (long labels collide on a log axis of several decades)."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def _loglog(ax, xlabel: str, ylabel: str = "test MSE (geometric mean)") -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Ticks at 1, 2, 5 x 10^k as plain numbers: matplotlib's minor labels (2x10^2, 4x10^2, ...) run together
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_short_number))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


def _panels(n: int, w: float = 4.2, h: float = 3.6):
    fig, axes = plt.subplots(1, n, figsize=(w * n, h), squeeze=False)
    return fig, list(axes[0])


def _size_suffix(row: pd.Series, models: list[dict]) -> str:
    """", N_M=..." for a model other than an FCN whose arch has several sizes among ``models`` (else "")."""
    same = sum(m["arch"] == row["arch"] for m in models)
    if row["arch"] == "fcn" or same < 2 or pd.isna(row["n_params"]):
        return ""
    return f", N_M={int(row['n_params']):,}"


def _data_scaling_panels(an: Analysis, st: pd.DataFrame, models: list[dict], targets: list[str], title: str):
    fig, axes = _panels(len(targets), h=4.2 + 0.15 * len(models))  # room for the legend below
    drawn = 0
    for ax, t in zip(axes, targets, strict=True):
        for i, m in enumerate(models):
            g = st[(st["target"] == t)]
            for k, v in m.items():
                g = g[g[k].isna()] if v is None else g[g[k] == v]
            if g.empty:
                continue
            style = _style(i)
            # A model that two grids train (a longer budget at the largest N_D, say): one series per grid, the
            # grid with the most points filled and fitted, the others open and named, never mixed into one. A
            # point that is the same training as one already drawn (runs two grids share: Fig. 1's curves are
            # Fig. 4's) is not drawn twice.
            drawn_ids: set[str] = set()
            for j, name in enumerate(g["grid"].value_counts(sort=True).index):
                gg = g[g["grid"] == name]
                if j:
                    gg = gg[[not (ids and set(ids) <= drawn_ids) for ids in gg["group_ids"]]]
                    if gg.empty:
                        continue
                drawn_ids.update(i for ids in gg["group_ids"] for i in ids)
                row = gg.iloc[0]
                label = _model_label(row) + _size_suffix(row, models) + (f" ({name})" if j else "")
                n_lo, n_hi = gg["n_train"].min(), gg["n_train"].max()
                label += _draw_fit(ax, _fit_for(an, row), style["color"], n_lo, n_hi)
                _points(ax, gg, "n_train", style, label, fill=j == 0)
                drawn += 1
        drawn += _reference_curves(ax, an, st[st["target"] == t])
        _loglog(ax, "$N_D$ (training samples)")
        ax.set_title(f"{LABEL_TEX.get(t, t)}")
        # Below the panel: inside, a legend of four or five curves hid points (issue 25's 40-epoch point).
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.24), frameon=False)
    if not drawn:
        raise NotEnoughData("none of the chosen models has points")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _reference_curves(ax, an: Analysis, st: pd.DataFrame) -> int:
    """Draw the baselines (:data:`REFERENCE_ARCHS`) of one panel's points as dashed black curves; return how
    many. One curve per (arch, N_M): the feature count, and so N_M, depends on the channels."""
    ref = st[st["arch"].isin(REFERENCE_ARCHS)]
    n = 0
    for (arch, n_params), g in ref.groupby(["arch", "n_params"], sort=True):
        g = g.sort_values("n_train")
        fit = _fit_for(an, g.iloc[0])
        alpha = ""
        if fit is not None:
            lo, hi = fit.interval(1)
            alpha = f" (α={fit.alpha:.2f} [{lo:.2f}, {hi:.2f}])"
        ax.errorbar(
            g["n_train"],
            g["gm"],
            yerr=g["gm_se"].fillna(0.0).to_numpy(),
            color="black",
            ls=("--", "-.", ":")[n % 3],
            lw=1.2,
            marker="x",
            ms=5,
            capsize=2,
            label=f"{ARCH_NAME.get(arch, arch)}, N_M={int(n_params)} (reference){alpha}",
        )
        n += 1
    return n


def _main_depth(fcn: pd.DataFrame) -> int:
    depths = fcn["n_layers"].dropna().astype(int)
    return 3 if 3 in set(depths) else int(depths.value_counts().index[0])


def fig1(an: Analysis) -> plt.Figure:
    """Fig. 1: geometric-mean MSE vs N_D per target for the smallest and largest FCN and the other archs."""
    st = main_slice(an.stats)
    models: list[dict] = []
    fcn = st[st["arch"] == "fcn"]
    if not fcn.empty:
        L = _main_depth(fcn)
        ws = sorted(fcn.loc[fcn["n_layers"] == L, "width"].dropna().astype(int).unique())
        models += [{"arch": "fcn", "n_layers": L, "width": w} for w in sorted({ws[0], ws[-1]})]
    for arch in sorted(set(st["arch"]) - {"fcn", *REFERENCE_ARCHS}):
        sizes = st.loc[st["arch"] == arch, "n_params"]
        for p in sorted(sizes.dropna().astype(int).unique()):
            models.append({"arch": arch, "n_params": p})
        if sizes.isna().any():  # a table without model sizes (``fit TABLE``): one curve for the arch
            models.append({"arch": arch, "n_params": None})
    if st["n_train"].nunique() < 2:
        raise NotEnoughData("fewer than 2 dataset sizes")
    return _data_scaling_panels(an, st, models, _targets(st), "Fig. 1: data scaling")


def fig4abc(an: Analysis) -> plt.Figure:
    """Fig. 4 a-c: every FCN width at the main depth, MSE vs N_D, per target."""
    st = main_slice(an.stats)
    fcn = st[st["arch"] == "fcn"]
    if fcn.empty or fcn["width"].nunique() < 2:
        raise NotEnoughData("needs FCNs of at least 2 widths")
    L = _main_depth(fcn)
    ws = sorted(fcn.loc[fcn["n_layers"] == L, "width"].dropna().astype(int).unique())
    models = [{"arch": "fcn", "n_layers": L, "width": w} for w in ws]
    return _data_scaling_panels(
        an, st, models, _targets(st), f"Fig. 4 a-c: FCN widths (n_l={L} hidden layers)"
    )


def fig4d(an: Analysis) -> plt.Figure:
    """Fig. 4d: J (or the first target), one FCN width, varying depth n_l; alpha_D in the legend."""
    st = main_slice(an.stats)
    fcn = st[st["arch"] == "fcn"]
    t = "J" if "J" in set(fcn["target"]) else (_targets(fcn) or [None])[0]
    fcn = fcn[fcn["target"] == t]
    depth_count = fcn.groupby("width")["n_layers"].nunique()
    if depth_count.empty or depth_count.max() < 2:
        raise NotEnoughData("needs FCNs of one width at 2 or more depths")
    w = 16 if depth_count.get(16, 0) >= 2 else int(depth_count.idxmax())
    depths = sorted(fcn.loc[fcn["width"] == w, "n_layers"].dropna().astype(int).unique())
    models = [{"arch": "fcn", "n_layers": L, "width": w} for L in depths]
    return _data_scaling_panels(
        an, st, models, [t], f"Fig. 4d: {LABEL_TEX.get(t, t)}, $n_n$={w}, varying $n_l$"
    )


def _choose_points(g: pd.DataFrame, preferred: list[tuple[int, int]], k: int) -> list[pd.Series]:
    chosen = []
    for w, nd in preferred:
        m = g[(g["width"] == w) & (g["n_train"] == nd) & (g["n_r"] >= 2)]
        if not m.empty:
            chosen.append(m.iloc[0])
    if len(chosen) < k:
        rest = g[g["n_r"] >= 2].sort_values(["n_r", "n_train"], ascending=False)
        for _, r in rest.iterrows():
            if len(chosen) >= k:
                break
            if not any(r.name == c.name for c in chosen):
                chosen.append(r)
    return chosen[:k]


def fig3ad(an: Analysis) -> plt.Figure:
    """Fig. 3 a-d: test-loss distributions over realizations with arithmetic / geometric mean and median."""
    st = main_slice(an.stats)
    t = "J" if "J" in set(st["target"]) else _targets(st)[0]
    g = st[(st["target"] == t) & ~st["arch"].isin(REFERENCE_ARCHS)]
    pts = _choose_points(g, [(4, 3584), (16, 28672)], 2)
    if not pts:
        raise NotEnoughData("needs a grid point with at least 2 realizations")
    panels = []
    for p in pts:
        n = len(p["logs"])
        panels.append((p, min(20, n)))
        if n > 20:
            panels.append((p, n))
    fig, axes = _panels(len(panels), w=3.8, h=3.3)
    for ax, (p, n_r), letter in zip(axes, panels, "abcd", strict=False):
        x = np.exp(np.asarray(p["logs"])[:n_r])
        bins = np.geomspace(x.min() * 0.9, x.max() * 1.1, max(6, int(np.sqrt(n_r)) + 3))
        ax.hist(x, bins=bins, color="#BBBBBB", edgecolor="#555555")
        st = geometric_stats(x)
        gm, gse, am, ase, med, mad = (st[k] for k in ("gm", "gm_se", "am", "am_se", "median", "mad"))
        for (v, e, name), i in zip(
            [(am, ase, "arith. mean"), (gm, gse, "geom. mean"), (med, mad, "median (±MAD)")],
            (3, 0, 2),
            strict=True,
        ):
            c = OKABE_ITO[i]
            ax.axvline(v, color=c, lw=1.5, label=f"{name} {v:.2e}")
            ax.axvspan(max(v - e, x.min() * 0.5), v + e, color=c, alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("test MSE")
        ax.set_ylabel("networks")
        w = f"$n_n$={p['width']}" if p["arch"] == "fcn" else ARCH_NAME.get(p["arch"], p["arch"])
        ax.set_title(f"({letter}) {w}, $N_D$={p['n_train']}, $N_r$={n_r}", fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(f"Fig. 3 a-d: loss distribution over realizations ({LABEL_TEX.get(t, t)})")
    fig.tight_layout()
    return fig


def fig3e(an: Analysis, n_subsets: int = 50, seed: int = 0) -> plt.Figure:
    """Fig. 3e: geometric mean vs number of realizations, spread over random subsets (bootstrap)."""
    st = main_slice(an.stats)
    t = "J" if "J" in set(st["target"]) else _targets(st)[0]
    g = st[(st["target"] == t) & (st["arch"] == "fcn") & (st["n_r"] >= 4)]
    if g.empty:
        g = st[(st["target"] == t) & (st["n_r"] >= 4) & ~st["arch"].isin(REFERENCE_ARCHS)]
    if g.empty:
        raise NotEnoughData("needs grid points with at least 4 realizations")
    nds = [nd for nd in (1792, 7168, 28672) if nd in set(g["n_train"])]
    if not nds:
        all_nd = sorted(g["n_train"].unique())
        nds = sorted({all_nd[0], all_nd[len(all_nd) // 2], all_nd[-1]})
    fig, axes = _panels(len(nds), w=3.8, h=3.3)
    for ax, nd in zip(axes, nds, strict=True):
        gg = g[g["n_train"] == nd]
        ws = [w for w in (4, 16, 64, 256) if w in set(gg["width"].dropna())]
        rows = [gg[gg["width"] == w].iloc[0] for w in ws] or [r for _, r in gg.head(4).iterrows()]
        for i, r in enumerate(rows):
            b = bootstrap_gm(np.exp(r["logs"]), n_subsets=n_subsets, seed=seed)
            s = _style(i)
            lab = f"width {r['width']}" if r["arch"] == "fcn" else ARCH_NAME.get(r["arch"], r["arch"])
            ax.errorbar(b["n_r"], b["gm_mean"], yerr=b["gm_sd"], capsize=2, ms=4, label=lab, **s)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("$N_r$ (realizations)")
        ax.set_ylabel("geometric mean MSE")
        ax.set_title(f"$N_D$={nd}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Fig. 3e: geometric mean vs $N_r$ ({LABEL_TEX.get(t, t)}; SD over {n_subsets} subsets)")
    fig.tight_layout()
    return fig


def fig5(an: Analysis) -> plt.Figure:
    """Fig. 5: alpha_D vs model size with the log fit (largest N_M left out); other archs as markers."""
    main = main_slice(an.stats)
    sched = main["schedule"].iloc[0]
    trends = [(m, t) for m, t in an.size_trends if m["schedule"] == sched and m["noise_train"] == 0]
    fcn_trends = [(m, t) for m, t in trends if m["arch"] == "fcn"] or trends
    if not fcn_trends:
        raise NotEnoughData("needs alpha_D fits for at least 4 model sizes of one family")
    have = {m["target"] for m, _ in fcn_trends}
    targets = order_targets(have)  # a store's own label names
    fig, axes = _panels(len(targets))
    for ax, tg in zip(axes, targets, strict=True):
        m, tr = next((m, t) for m, t in fcn_trends if m["target"] == tg)
        for used, fill in ((True, True), (False, False)):
            sel = tr.used == used
            if sel.any():
                ax.errorbar(
                    tr.n_params[sel],
                    tr.alpha[sel],
                    yerr=[tr.alpha[sel] - tr.alpha_lo[sel], tr.alpha_hi[sel] - tr.alpha[sel]],
                    ls="none",
                    capsize=2,
                    color=OKABE_ITO[0],
                    marker="o",
                    mfc=OKABE_ITO[0] if fill else "white",
                    label=f"{ARCH_NAME.get(m['arch'], m['arch'])}" + ("" if used else " (left out)"),
                )
        x = np.geomspace(tr.n_params.min() / 1.5, tr.n_params.max() * 1.5, 50)
        lo, hi = tr.band(x)
        d = tr.to_dict()
        ax.plot(
            x,
            tr.predict(x),
            "--",
            color=OKABE_ITO[0],
            label=f"a_D={d['a_D']:.2f} [{d['a_D_lo']:.2f}, {d['a_D_hi']:.2f}], "
            f"b_D={d['b_D']:.2f} [{d['b_D_lo']:.2f}, {d['b_D_hi']:.2f}]",
        )
        ax.fill_between(x, lo, hi, color=OKABE_ITO[0], alpha=0.15, lw=0)
        others = [
            (mm, f)
            for mm, f in an.curves_d
            if mm["arch"] != m["arch"]
            and mm["target"] == tg
            and mm["schedule"] == sched
            and mm["noise_train"] == 0
            and mm["n_params"]
            and mm["arch"] not in REFERENCE_ARCHS
        ]
        for i, (mm, f) in enumerate(others, start=1):
            lo_, hi_ = f.interval(1)
            s = _style(i)
            ax.errorbar(
                [mm["n_params"]],
                [f.alpha],
                yerr=[[f.alpha - lo_], [hi_ - f.alpha]],
                capsize=2,
                ms=7,
                ls="none",
                label=ARCH_NAME.get(mm["arch"], mm["arch"]),
                **s,
            )
        ax.axhspan(1.0, 2.0, color="#999999", alpha=0.1, label="paper: 1-2")
        ax.set_xscale("log")
        ax.set_xlabel("$N_M$ (parameters)")
        ax.set_ylabel(r"$\alpha_D$")
        ax.set_title(LABEL_TEX.get(tg, tg))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(r"Fig. 5: $\alpha_D$ vs model size, $\alpha_D = a_D \log_{10}(N_M/10^6) + b_D$")
    fig.tight_layout()
    return fig


def fig_model_size(an: Analysis) -> plt.Figure:
    """Model-size scaling: MSE vs N_M per target, one curve per N_D, with alpha_M fits."""
    st = main_slice(an.stats)
    fcn = st[st["arch"] == "fcn"]
    if fcn.empty or fcn["n_params"].nunique() < 3:
        raise NotEnoughData("needs at least 3 FCN model sizes")
    L = _main_depth(fcn)
    fcn = fcn[fcn["n_layers"] == L]
    nds = sorted(fcn["n_train"].unique())
    pick = sorted({nds[int(round(i))] for i in np.linspace(0, len(nds) - 1, min(5, len(nds)))})
    targets = _targets(st)
    fig, axes = _panels(len(targets))
    for ax, t in zip(axes, targets, strict=True):
        for i, nd in enumerate(pick):
            g = fcn[(fcn["target"] == t) & (fcn["n_train"] == nd)]
            if g.empty:
                continue
            s = _style(i)
            lab = f"FCN, N_D={nd}" + _draw_fit(
                ax, _fit_for(an, g.iloc[0], "n_params"), s["color"], g["n_params"].min(), g["n_params"].max()
            )
            _points(ax, g, "n_params", s, lab)
            o = st[~st["arch"].isin(["fcn", *REFERENCE_ARCHS]) & (st["target"] == t) & (st["n_train"] == nd)]
            for _, r in o.iterrows():
                ax.plot(
                    [r["n_params"]],
                    [r["gm"]],
                    marker={"resnet18": "*", "vit": "P"}.get(r["arch"], "X"),
                    ms=9,
                    color=s["color"],
                    ls="none",
                    label=f"{ARCH_NAME.get(r['arch'], r['arch'])} (colour = N_D)" if i == 0 else None,
                )
        _loglog(ax, "$N_M$ (parameters)")
        ax.set_title(LABEL_TEX.get(t, t))
        ax.legend(fontsize=6)
    fig.suptitle(f"Model-size scaling ($n_l$={L}): " + r"$\varepsilon \propto N_M^{-\alpha_M}$")
    fig.tight_layout()
    return fig


def fig_schedules(an: Analysis) -> plt.Figure:
    """Learning-rate schedule comparison: MSE vs N_D per schedule for the model with the most schedules."""
    st = an.stats[(an.stats["noise_train"] == 0) & (an.stats["n_r"] > 0)]
    keys = ["arch", "n_layers", "width", "n_params"]
    cnt = st.groupby(keys, dropna=False)["schedule"].nunique()
    if cnt.empty or cnt.max() < 2:
        raise NotEnoughData("needs one model trained with at least 2 schedules")
    model = dict(zip(keys, cnt.idxmax(), strict=True))
    g = st
    for k, v in model.items():
        g = g[g[k].isna()] if v is None or pd.isna(v) else g[g[k] == v]
    targets = _targets(g)
    fig, axes = _panels(len(targets))
    for ax, t in zip(axes, targets, strict=True):
        for i, sched in enumerate(sorted(g["schedule"].unique())):
            gg = g[(g["target"] == t) & (g["schedule"] == sched)]
            if gg.empty:
                continue
            s = _style(i)
            lab = (sched or "(none)") + _draw_fit(
                ax, _fit_for(an, gg.iloc[0]), s["color"], gg["n_train"].min(), gg["n_train"].max()
            )
            _points(ax, gg, "n_train", s, lab)
        _loglog(ax, "$N_D$ (training samples)")
        ax.set_title(LABEL_TEX.get(t, t))
        ax.legend(fontsize=7)
    fig.suptitle(f"Learning-rate schedules: {_model_label(model)}")
    fig.tight_layout()
    return fig


def fig_joint(an: Analysis) -> plt.Figure:
    """Joint law eps(N_D, N_M) and its extrapolation test (fit on the smaller N_D, held-out points open)."""
    if not an.joints:
        raise NotEnoughData("needs a joint fit (>= 2 model sizes, >= 3 dataset sizes)")
    fams = an.joint_extrap or [(m, j, []) for m, j in an.joints]
    fams = sorted(fams, key=lambda f: (f[0]["arch"] != "fcn", f[0]["noise_train"] != 0))
    arch = fams[0][0]["arch"]
    fams = [f for f in fams if f[0]["arch"] == arch][:3]
    fig, axes = _panels(len(fams))
    for ax, (meta, jx, rows) in zip(axes, fams, strict=True):
        full = next(j for m, j in an.joints if m == meta)
        held = {(r["n_params"], r["n_train"]) for r in rows}
        sizes = sorted(set(full.n_params))
        pick = [sizes[int(round(i))] for i in np.linspace(0, len(sizes) - 1, min(5, len(sizes)))]
        for i, nm in enumerate(dict.fromkeys(pick)):
            s = _style(i)
            sel = full.n_params == nm
            nd, y, sg = full.n_train[sel], np.exp(full.y[sel]), full.sigma[sel]
            for ho in (False, True):
                m2 = np.array([((nm, d) in held) == ho for d in nd])
                if m2.any():
                    ax.errorbar(
                        nd[m2],
                        y[m2],
                        yerr=y[m2] * sg[m2],
                        ls="none",
                        capsize=2,
                        ms=5,
                        mfc="white" if ho else s["color"],
                        color=s["color"],
                        marker=s["marker"],
                        label=f"N_M={int(nm):,}" if not ho else None,
                    )
            x = np.geomspace(nd.min(), nd.max(), 60)
            ax.plot(x, full.predict(nm, x), "-", color=s["color"], lw=1)
            if rows:
                lo, hi = jx.band(nm, x)
                ax.plot(x, jx.predict(nm, x), ":", color=s["color"], lw=1.4)
                ax.fill_between(x, lo, hi, color=s["color"], alpha=0.12, lw=0)
        d = full.to_dict()
        txt = (
            f"E={d['E']:.2g}, a={d['a']:.2f} [{d['a_lo']:.2f}, {d['a_hi']:.2f}],\n"
            f"b={d['b']:.2f} [{d['b_lo']:.2f}, {d['b_hi']:.2f}]"
        )
        if rows:
            inside = sum(r["inside"] for r in rows)
            txt += f"\nextrapolation: {inside}/{len(rows)} held-out in band"
        ax.text(0.03, 0.03, txt, transform=ax.transAxes, fontsize=7, va="bottom")
        _loglog(ax, "$N_D$ (training samples)")
        ax.set_title(f"{ARCH_NAME.get(arch, arch)}, {LABEL_TEX.get(meta['target'], meta['target'])}")
        ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(
        r"Joint fit $E + A N_M^{-a} + B N_D^{-b}$ (solid); fit on smaller $N_D$ only (dotted, band); "
        "held-out points open",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def noise_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Geometric-mean MSE per (model, target, N_D, noise kind, level) from ``noise.parquet``."""
    df = read_parquet_file(path, what="noise table")
    need = ["arch", "width", "n_layers", "target", "n_train", "noise_kind", "noise_level", "mse"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise NotEnoughData(f"noise.parquet lacks columns {missing}")
    df = df[np.isfinite(df["mse"]) & (df["mse"] > 0)]
    if df.empty:
        raise NotEnoughData("noise.parquet has no positive finite MSE")
    keys = need[:-1]
    g = df.groupby(keys, dropna=False)["mse"]
    out = g.apply(geomean).rename("gm").to_frame()
    out["n_r"] = g.size()
    out["log_se"] = g.apply(lambda s: mean_log(np.log(s))[1] if len(s) > 1 else 0.0)
    return out.reset_index()


def fig_noise(table: pd.DataFrame) -> plt.Figure:
    """Noise robustness: MSE vs noise level per noise kind, one curve per (model, target, N_D)."""
    kinds = sorted(table["noise_kind"].unique())
    fig, axes = _panels(len(kinds))
    for ax, kind in zip(axes, kinds, strict=True):
        g = table[table["noise_kind"] == kind]
        curves = list(g.groupby(["arch", "n_layers", "width", "target", "n_train"], dropna=False))
        for i, (key, gg) in enumerate(curves[:8]):
            gg = gg.sort_values("noise_level")
            s = _style(i)
            arch, L, w, t, nd = key
            lab = _model_label({"arch": arch, "n_layers": L, "width": w}) + f", {t}, N_D={nd}"
            ax.errorbar(
                gg["noise_level"], gg["gm"], yerr=gg["gm"] * gg["log_se"], capsize=2, ms=4, label=lab, **s
            )
        lv = g["noise_level"]
        if (lv > 0).any():
            ax.set_xscale("symlog", linthresh=float(lv[lv > 0].min())) if (lv == 0).any() else ax.set_xscale(
                "log"
            )
        ax.set_yscale("log")
        ax.set_xlabel(f"noise level ({kind})")
        ax.set_ylabel("test MSE (geometric mean)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("Noise robustness")
    fig.tight_layout()
    return fig


def fig_alpha_vs_dimension(points: pd.DataFrame) -> plt.Figure:
    """Measured alpha_D against 4/d, one panel per model family; colour = dataset variant, marker = target.

    ``points``: :func:`moirescale.analysis.variants.alpha_points` (alpha with its interval, 4/d with the
    interval from d's). The diagonal is the theory's alpha_D = 4/d; the paper's 1-2 is shaded. A point whose
    curve failed its budget check (``converged`` False) is drawn open: its slope is partly the optimiser's.
    """
    if points.empty:
        raise NotEnoughData("no (variant, target, family) point")
    fams = list(dict.fromkeys(points["family"]))
    variants = list(dict.fromkeys(points["variant"]))
    targets = order_targets(points["target"])
    fig, axes = _panels(len(fams), w=4.6, h=4.2)
    top = 1.15 * max(points["alpha_hi"].max(), points["four_over_d_hi"].max(), 2.0)
    for ax, fam in zip(axes, fams, strict=True):
        ax.axhspan(1.0, 2.0, color="#999999", alpha=0.12, lw=0, label="paper: 1-2")
        ax.plot([0, top], [0, top], "--", color="black", lw=1, label=r"$\alpha_D = 4/d$")
        g = points[points["family"] == fam]
        for _, r in g.iterrows():
            i = variants.index(r["variant"])
            colour = OKABE_ITO[i % len(OKABE_ITO)]
            failed = bool(r.get("converged") == False)  # noqa: E712 (None, NaN: no check, drawn filled)
            ax.errorbar(
                [r["four_over_d"]],
                [r["alpha"]],
                xerr=[[r["four_over_d"] - r["four_over_d_lo"]], [r["four_over_d_hi"] - r["four_over_d"]]],
                yerr=[[r["alpha"] - r["alpha_lo"]], [r["alpha_hi"] - r["alpha"]]],
                ls="none",
                capsize=2,
                ms=6,
                color=colour,
                mfc="white" if failed else colour,
                marker=MARKERS[targets.index(r["target"]) % len(MARKERS)],
            )
        for i, v in enumerate(variants):  # legend: variants by colour, targets by marker
            ax.plot([], [], "s", color=OKABE_ITO[i % len(OKABE_ITO)], label=v)
        for j, t in enumerate(targets):
            m = MARKERS[j % len(MARKERS)]
            ax.plot([], [], m, color="#555555", label=LABEL_TEX.get(t, t))
        if "converged" in g and (g["converged"] == False).any():  # noqa: E712 (None/NaN are not False)
            ax.plot([], [], "o", color="#555555", mfc="white", label="open: budget check failed")
        ax.set_title(", ".join(dict.fromkeys(g["model"])), fontsize=9)  # the model(s) standing for the family
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel(f"4/d (d: {points['estimator'].iloc[0]})")
        ax.set_ylabel(r"measured $\alpha_D$")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(r"Data-scaling exponent vs intrinsic dimension: $\varepsilon \propto N_D^{-4/d}$?")
    fig.tight_layout()
    return fig


FIGURES: dict[str, tuple[str, Callable[[Analysis], plt.Figure]]] = {
    "fig1_data_scaling": ("Fig. 1: geometric-mean test MSE vs N_D per target, with power-law fits", fig1),
    "fig3ad_distributions": ("Fig. 3 a-d: distributions of the test loss over realizations", fig3ad),
    "fig3e_bootstrap": ("Fig. 3e: geometric mean vs number of realizations (subset bootstrap)", fig3e),
    "fig4abc_fcn_widths": ("Fig. 4 a-c: FCN widths, MSE vs N_D per target", fig4abc),
    "fig4d_depth": ("Fig. 4d: varying depth n_l at fixed width", fig4d),
    "fig5_alpha_vs_size": ("Fig. 5: alpha_D vs model size N_M", fig5),
    "fig6_model_size": ("Model-size scaling: MSE vs N_M", fig_model_size),
    "fig7_schedules": ("Learning-rate schedule comparison", fig_schedules),
    "fig8_joint_extrapolation": ("Joint fit and extrapolation test", fig_joint),
}


def _save(fig: plt.Figure, folder: Path, name: str, rundir: Path | None = None) -> dict[str, str]:
    """Write ``fig`` as ``folder/name.png`` and ``.svg``. With ``rundir`` (``folder`` is ``RUNDIR/figures``)
    the folder is checked for each figure by :func:`moirescale.fsio.real_dir`: a link planted there while
    the report runs is refused, not followed."""
    if rundir is not None:
        folder = real_dir(rundir, folder.name)
    else:
        folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for ext, kw in (("png", {"dpi": 110}), ("svg", {})):
        path = folder / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, **kw)
        out[ext] = str(path)
    plt.close(fig)
    return out


def make_figures(
    an: Analysis, rundir: str | os.PathLike[str], n_subsets: int = 50
) -> dict[str, dict[str, Any]]:
    """Draw every figure the data supports into ``RUNDIR/figures``.

    Returns ``{name: {"caption", "png", "svg"}}`` for drawn figures and ``{name: {"caption", "skipped"}}`` for
    the others (with the reason).
    """
    folder = rd.figures_dir(rundir)
    out: dict[str, dict[str, Any]] = {}
    for name, (caption, fn) in FIGURES.items():
        try:
            fig = fig3e(an, n_subsets=n_subsets, seed=an.settings.seed) if fn is fig3e else fn(an)
        except NotEnoughData as e:
            out[name] = {"caption": caption, "skipped": f"not enough data: {e}"}
            continue
        out[name] = {"caption": caption, **_save(fig, folder, name, Path(rundir))}
    noise = rd.noise_path(rundir)
    cap = "Noise robustness: test MSE vs injected noise level"
    if noise.exists():
        try:
            out["fig9_noise"] = {"caption": cap, **_save(fig_noise(noise_table(noise)), folder, "fig9_noise",
                                                               Path(rundir))}
        except NotEnoughData as e:
            out["fig9_noise"] = {"caption": cap, "skipped": f"not enough data: {e}"}
    else:
        out["fig9_noise"] = {
            "caption": cap,
            "skipped": f"not enough data: no {rd.NOISE} in the run directory",
        }
    return out
