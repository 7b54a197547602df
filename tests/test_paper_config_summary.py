"""studies/paper_config_summary.py keeps what it cannot recompute: curves whose run directories are gone stay
as the CSVs hold them, a recomputed curve replaces a kept one only when it is at least as complete, and
per-run rows merge by run (the run directory's row wins)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "studies" / "paper_config_summary.py"
spec = importlib.util.spec_from_file_location("paper_config_summary", SCRIPT)
summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summary)


def _point(grid: str, width: int | None, target: str, n: int, mse: float) -> dict:
    return {"variant": "default", "grid": grid, "width": width, "target": target, "n_train": n,
            "gm_test_mse": mse, "n_r": 5}


def test_points_are_replaced_point_by_point():
    kept = [_point("fcn_mid", 16, "theta", n, 0.1) for n in (224, 448, 896)]
    kept += [_point("fcn4", 4, "J", 224, 0.08)]
    partial = [_point("fcn_mid", 16, "theta", n, 0.2) | {"budget_ratio_at_largest": 0.7} for n in (448, 1792)]
    out = summary.merge_points(kept, partial)
    got = {(r["grid"], r["n_train"]): r["gm_test_mse"] for r in out}
    assert got == {("fcn_mid", 224): 0.1, ("fcn_mid", 448): 0.2, ("fcn_mid", 896): 0.1,
                   ("fcn_mid", 1792): 0.2, ("fcn4", 224): 0.08}  # recomputed win, the kept stay elsewhere
    assert {r.get("budget_ratio_at_largest") for r in out if r["grid"] == "fcn_mid"} == {0.7}
    assert summary.merge_points(kept, []) == kept


def test_fits_keep_the_fuller_curve_and_pairs_merge_by_run():
    kept = [{**_point("fcn_mid", 16, "theta", 0, 0), "points": 7, "alpha_d": 0.11, "n_train_max": 57344}]
    assert summary.merge_fits(kept, [{**kept[0], "points": 5, "alpha_d": 0.5}])[0]["alpha_d"] == 0.11
    assert summary.merge_fits(kept, [{**kept[0], "points": 10, "alpha_d": 0.2}])[0]["alpha_d"] == 0.2
    further = {**kept[0], "points": 6, "alpha_d": 0.3, "n_train_max": 114688}  # fewer points, a larger N_D
    assert summary.merge_fits(kept, [further])[0]["alpha_d"] == 0.3
    pair = {"variant": "default", "arch": "fcn", "width": 512, "target": "theta", "n_train": 14336,
            "realization": 0, "data_seed": 1, "steps_long": 4480, "source_long": "runs/x", "ratio": 0.7}
    ladder = {**pair, "steps_long": 8960, "ratio": 0.5}  # the same run at another budget is another pair
    merged = summary.merge_pairs([pair, ladder], [{**pair, "ratio": 0.71}])
    assert sorted(r["ratio"] for r in merged) == [0.5, 0.71]


def test_cells_read_back_as_values_and_runs_merge_by_run():
    assert [summary._value(v) for v in ("", "True", "False", "3", "0.5", "fcn")] == [
        None, True, False, 3, 0.5, "fcn"]
    row = dict.fromkeys(summary.RUN_COLUMNS, 1) | {"variant": "default", "grid": "g", "test_mse": 0.1}
    old = pd.DataFrame([row, {**row, "realization": 2}])
    new = pd.DataFrame([{**row, "test_mse": 0.2}])
    merged = summary.merge_runs(old, [new])
    assert len(merged) == 2 and sorted(merged["test_mse"]) == [0.1, 0.2]


def test_per_run_rows_read_back_exactly(tmp_path):
    """The per-run CSV is what every table is recomputed from without the run directories: its MSEs read back
    as the same floats (the curve tables round to 6 digits; these must not)."""
    mse = [0.005470093535950522, 1 / 3, 2.0000000000000004e-05]
    blank = dict.fromkeys(summary.RUN_COLUMNS, 1)
    rows = [blank | {"test_mse": m, "realization": i} for i, m in enumerate(mse)]
    path = tmp_path / "runs.csv"
    summary.write_csv(path, summary.RUN_COLUMNS, rows, exact=True)
    assert summary.read_runs(path)["test_mse"].tolist() == mse
    summary.write_csv(path, summary.RUN_COLUMNS, rows)
    assert summary.read_runs(path)["test_mse"].tolist() != mse  # 6 digits: what the curve tables write
