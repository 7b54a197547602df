"""Where in label space a curve's test error sits (docs/results.md §5): squared error by D and by θ_eff.

    .venv/bin/python studies/error_by_label.py RUN GRID TARGET N_D [--width W] [--theta-bins K]
    .venv/bin/python studies/error_by_label.py runs/study48-fss fcn64_long D 28672 --width 64
    .venv/bin/python studies/error_by_label.py runs/paper-fss fcn512 theta 114688 --theta-bins 6 \
        --csv docs/results/paper-config-error-by-label.csv      # rows of this point replace its old ones

The study's format of ``moirescale errors`` (:mod:`moirescale.use.error_map`, which does the work): per bin of
D (5 equal bins of its range) and per value of θ_eff (or per K equal bins of its range, for the paper's ~87
values), the mean squared error of the target in scaled units (geometric mean over realizations) and the bin's
share of the squared error, so a floor can be traced to the labels that cause it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from moirescale.fsio import atomic_write
from moirescale.labels import LABELS
from moirescale.use.error_map import MAX_BINS, error_by_label


def study_rows(table: pd.DataFrame) -> list[tuple[str, int, float, float]]:
    """(bin name, images, MSE, share) of the D and θ_eff rows, named as this study's tables always were."""
    out = []
    for r in table.itertuples():
        if r.label == "D":
            name = f"D {r.lo:.2f}–{r.hi:.2f} meV"
        elif r.label == "theta":
            name = (f"θ_eff {r.lo:.4f}°" if r.lo == r.hi
                    else f"θ_eff {r.lo:.2f}–{r.hi:.2f}° ({r.values} values)")
        else:
            continue
        out.append((name, r.images, r.mse, r.share))
    return sorted(out, key=lambda t: not t[0].startswith("D"))  # D first, as before


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
    table, head = error_by_label(a.run, a.target, a.n_train, grid=a.grid, width=a.width, n_bins=5,
                                 per_label={"theta": a.theta_bins or MAX_BINS})
    print(f"{a.grid} {a.target} N_D={a.n_train}: {head['realizations']} realizations, {head['images']} test "
          f"images, MSE {head['mse']:.2e}")
    print("| bin | images | MSE | share of the total squared error |")
    print("|---|---|---|---|")
    rows = []
    for name, images, mse, share in study_rows(table):
        print(f"| {name} | {images} | {mse:.2e} | {share:.0%} |")
        rows.append({"run": a.run.name, "grid": a.grid, "target": a.target, "n_train": a.n_train,
                     "realizations": head["realizations"], "bin": name, "images": int(images),
                     "gm_mse": f"{mse:.4g}", "share": f"{share:.4f}"})
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
