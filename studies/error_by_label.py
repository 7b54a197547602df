"""Where in label space a curve's test error sits (docs/results.md §5): squared error by D and by θ_eff.

    .venv/bin/python studies/error_by_label.py RUN GRID TARGET N_D [--width W] [--theta-bins K]
    .venv/bin/python studies/error_by_label.py runs/study48-fss fcn64_long D 28672 --width 64
    .venv/bin/python studies/error_by_label.py runs/paper-fss fcn512 theta 114688 --theta-bins 6 \
        --csv docs/results/paper-config-error-by-label.csv      # rows of this point replace its old ones

Every finished realization of that grid point predicts the whole test split of the run's store; the table
gives, per bin of D (5 equal bins of its range) and per value of θ_eff (or per K equal bins of its range,
for the paper's ~87 values), the mean squared error of the target in scaled units (geometric mean over
realizations), so a floor can be traced to the labels that cause it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from moirescale.data.store import open_store
from moirescale.data.torch_data import label_scaler
from moirescale.fsio import atomic_write
from moirescale.labels import LABELS, target_index
from moirescale.results import checkpointed_rows, read_results
from moirescale.rundir import dataset_store
from moirescale.stats import geomean
from moirescale.train import load_checkpoint
from moirescale.use.noise import model_channels, predict_images


def predictions(rundir: Path, rows, store) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels in physical units, scaled labels, predictions per realization (R, N, k)) on the test split."""
    images, labels = store.read("test", np.arange(store.split_len("test")))
    y = label_scaler(store).scale(labels)
    preds = []
    for _, r in rows.iterrows():
        model, meta = load_checkpoint(rundir / r["checkpoint"])
        preds.append(predict_images(model, np.ascontiguousarray(images[:, model_channels(meta, store)])))
    return labels, y, np.stack(preds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("grid")
    ap.add_argument("target", choices=LABELS)
    ap.add_argument("n_train", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--theta-bins", type=int, default=0, help="K equal bins of θ_eff (0: one row per value)")
    ap.add_argument("--csv", type=Path, help="also write the rows to this CSV (replacing this point's rows)")
    a = ap.parse_args()
    d = checkpointed_rows(read_results(a.run), a.run)
    d = d[(d["grid"] == a.grid) & (d["target"] == a.target) & (d["n_train"] == a.n_train)]
    if a.width is not None:
        d = d[d["width"] == a.width]
    if d.empty:
        raise SystemExit(f"{a.run}: no checkpoint for {a.grid} {a.target} N_D={a.n_train}")
    recorded = dataset_store(a.run)
    if recorded is None:
        raise SystemExit(f"{a.run}: the run directory does not name its dataset")
    store = open_store(a.run / recorded)
    labels, y, pred = predictions(a.run, d, store)
    col = target_index(a.target)[0]
    err = (pred[:, :, 0] - y[None, :, col]) ** 2  # (R, N)
    print(f"{a.grid} {a.target} N_D={a.n_train}: {len(d)} realizations, {err.shape[1]} test images, "
          f"MSE {geomean(err.mean(1)):.2e}")
    print("| bin | images | MSE | share of the total squared error |")
    print("|---|---|---|---|")
    total = err.mean(0).sum()
    bins = []
    D = labels[:, LABELS.index("D")]
    edges = np.linspace(D.min(), D.max(), 6)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        bins.append((f"D {lo:.2f}–{hi:.2f} meV", (D >= lo) & (D <= hi)))  # noqa: SIM300
    th = np.round(labels[:, LABELS.index("theta")], 4)
    if a.theta_bins:
        edges = np.linspace(th.min(), th.max(), a.theta_bins + 1)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            m = (th >= lo) & (th <= hi)
            bins.append((f"θ_eff {lo:.2f}–{hi:.2f}° ({np.unique(th[m]).size} values)", m))
    else:
        bins += [(f"θ_eff {t:.4f}°", th == t) for t in np.unique(th)]
    rows = []
    for name, m in bins:
        share = err.mean(0)[m].sum() / total
        print(f"| {name} | {m.sum()} | {geomean(err[:, m].mean(1)):.2e} | {share:.0%} |")
        rows.append({"run": a.run.name, "grid": a.grid, "target": a.target, "n_train": a.n_train,
                     "realizations": len(d), "bin": name, "images": int(m.sum()),
                     "gm_mse": f"{geomean(err[:, m].mean(1)):.4g}", "share": f"{share:.4f}"})
    if a.csv is not None:
        write_rows(a.csv, rows)


def write_rows(path: Path, rows: list[dict]) -> None:
    """Add ``rows`` to the CSV at ``path``, replacing the rows of the same point (run, grid, target, N_D)."""
    key = ("run", "grid", "target", "n_train")
    old = pd.read_csv(path, dtype=str) if path.exists() else pd.DataFrame(columns=list(rows[0]))
    mine = {tuple(str(r[k]) for k in key) for r in rows}
    old = old[[tuple(v) not in mine for v in old[list(key)].astype(str).itertuples(index=False)]]
    out = pd.concat([old, pd.DataFrame(rows).astype(str)], ignore_index=True)
    atomic_write(path, out.to_csv(index=False, lineterminator="\n"))


if __name__ == "__main__":
    main()
