"""Why a narrow FCN predicts the mean: how many of its ReLU units still fire on test images.

    .venv/bin/python studies/dead_units.py runs/paper-default --grid fcn4 [--n 2000]
        -> docs/results/paper-config-dead-units.csv (one row per network) and a summary table on stdout

A unit is *alive* if its ReLU output is positive on at least one of the first ``--n`` test images. A layer
with no live unit cuts the head off the image: the network then outputs one constant, the value that
minimises its training MSE, i.e. about the mean label (MSE ≈ 1/12 on labels scaled to [0, 1]).
``out_std`` is the spread of the network's own predictions over the images (0 for a constant network).

It also prints, as a diagnostic beside the protocol's curve (not a replacement for it), alpha_D fitted over
only the realizations that are live at every N_D of a target.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from moirescale.analysis.fits import fit_power_law
from moirescale.data.store import open_store
from moirescale.data.torch_data import load_arrays
from moirescale.fsio import atomic_write
from moirescale.rundir import dataset_store
from moirescale.stats import load_results
from moirescale.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["variant", "grid", "width", "target", "n_train", "realization", "test_mse", "alive_1", "alive_2",
           "alive_3", "out_std", "constant"]


def live_units(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[int], float]:
    """(live units per hidden layer, std of the outputs) of an FCN on a batch of images."""
    alive = []
    h = x.flatten(1)
    with torch.no_grad():
        for layer in model.layers:
            h = torch.relu(layer(h))
            alive.append(int((h > 0).any(dim=0).sum()))
        out = model.head(h)
    return alive, float(out.std(dim=0).max())


def live_fits(table: pd.DataFrame) -> list[dict]:
    """alpha_D per target over the realizations that are live at every N_D (see the module docstring)."""
    out = []
    for target, g in table.groupby("target"):
        live = [r for r, h in g.groupby("realization") if not h["constant"].any()]
        h = g[g["realization"].isin(live)]
        pts = list(h.groupby("n_train"))
        if len(live) < 1 or len(pts) < 3:
            continue
        ns = np.array([float(n) for n, _ in pts])
        logs = [np.log(k["test_mse"].to_numpy()) for _, k in pts]
        fit = fit_power_law(ns, logs, labels=[k["realization"].to_numpy() for _, k in pts], n_boot=2000)
        lo, hi = fit.interval(1)
        out.append({"target": target, "live": live, "alpha_d": fit.alpha, "lo95": lo, "hi95": hi})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rundir", type=Path)
    ap.add_argument("--grid", default="fcn4")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "paper-config-dead-units.csv")
    args = ap.parse_args()
    torch.set_num_threads(1)
    df = load_results(args.rundir)
    df = df[(df["grid"] == args.grid) & (df["status"] == "ok")]
    df = df.sort_values(["target", "n_train", "realization"])
    store = open_store(dataset_store(args.rundir))
    x_cache: dict[str, torch.Tensor] = {}
    rows = []
    try:
        for r in df.itertuples():
            model, meta = load_checkpoint(args.rundir / r.checkpoint)
            ch = meta["channels"]
            if ch not in x_cache:
                x, _ = load_arrays(store, "test", np.arange(args.n), ch)
                x_cache[ch] = torch.from_numpy(x)
            alive, out_std = live_units(model, x_cache[ch])
            rows.append({"variant": args.rundir.name.removeprefix("paper-"), "grid": r.grid, "width": r.width,
                         "target": r.target, "n_train": r.n_train, "realization": r.realization,
                         "test_mse": r.test_mse, **{f"alive_{i + 1}": a for i, a in enumerate(alive)},
                         "out_std": out_std, "constant": min(alive) == 0})
    finally:
        store.close()
    out = pd.DataFrame(rows, columns=COLUMNS)
    atomic_write(args.out, out.to_csv(index=False, float_format="%.6g"))
    by = ["target", "n_train"]
    summary = out.groupby(by).agg(networks=("constant", "size"), constant=("constant", "sum"))
    summary["mse_constant"] = out[out["constant"]].groupby(by)["test_mse"].mean()
    summary["mse_live"] = out[~out["constant"]].groupby(by)["test_mse"].mean()
    print(summary.to_string())
    for f in live_fits(out):
        print(f"live-only alpha_D({f['target']}), realizations {f['live']}: {f['alpha_d']:.3f} "
              f"[{f['lo95']:.3f}, {f['hi95']:.3f}]")
    print(f"{int(out['constant'].sum())} of {len(out)} networks constant -> {args.out}")


if __name__ == "__main__":
    main()
