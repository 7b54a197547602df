"""The convergence check: a grid's largest N_D retrained with a larger step budget, compared in the report."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from moirescale.analysis.convergence import convergence_table, split_checks
from moirescale.analysis.pipeline import advise, analyze, format_advice
from moirescale.errors import UserError
from moirescale.results import BUDGET_CHECK_SUFFIX
from moirescale.sweep.config import parse_config
from moirescale.sweep.expand import grid_points, spec_run_ids, unique_points

BASE = {
    "name": "t",
    "dataset": {"store": "store"},
    "recipes": {"fcn": {"schedule": "adjustable", "schedule_kw": {"min_steps": 100, "min_epochs": 5}}},
    "grids": [
        {
            "name": "g",
            "model": {"arch": "fcn", "n_layers": 3, "width": [4, 8]},
            "n_train": {"k_range": [0, 3]},
            "targets": ["J", "D"],
            "realizations": 3,
            "convergence_check": 4,
        }
    ],
}


def test_the_check_retrains_each_curves_largest_point_with_the_larger_budget():
    cfg = parse_config(copy.deepcopy(BASE))
    points = grid_points(cfg, cfg.grids[0])
    checks = [p for p in points if p.grid.endswith(BUDGET_CHECK_SUFFIX)]
    assert len(points) == 2 * 2 * 4 + 4 and len(checks) == 4  # one per (width, target)
    for c in checks:
        assert c.n_train == 224 * 2**3 and c.schedule_kw == {"min_steps": 400, "min_epochs": 20.0}
        assert c.realizations == (0, 1, 2)
    # distinct run ids: the checks are trained, not deduplicated into their curve points
    assert len(unique_points(cfg)) == len(points)
    # each check comes right after the largest point of the curve it checks (a sweep's job order)
    for i, c in enumerate(points):
        if c in checks:
            src = points[i - 1]
            assert (src.model_kw, src.target, src.n_train) == (c.model_kw, c.target, c.n_train)
            assert not src.grid.endswith(BUDGET_CHECK_SUFFIX)


def test_each_schedule_of_a_grid_gets_its_own_check():
    d = copy.deepcopy(BASE)
    d["grids"][0]["schedules"] = [{"schedule": "adjustable", "schedule_kw": {"min_steps": s}}
                                  for s in (100, 200)]
    cfg = parse_config(d)
    checks = [p for p in grid_points(cfg, cfg.grids[0]) if p.grid.endswith(BUDGET_CHECK_SUFFIX)]
    # one per width, target and schedule: 2 x 2 with min_steps 4 x 100, 2 x 2 with 4 x 200
    assert sorted(c.schedule_kw["min_steps"] for c in checks) == [400] * 4 + [800] * 4


@pytest.mark.parametrize("limit", [{"max_epochs": 3}, {"schedule_kw": {"max_steps": 150}}])
def test_the_check_scales_a_budget_set_by_max_epochs_or_max_steps(limit):
    """Regression (issue 28): with max_epochs (or max_steps) setting the budget, scaling min_steps and
    min_epochs left the check's budget equal to its curve's: the check did nothing."""
    from moirescale.train.resolve import schedule_of

    data = copy.deepcopy(BASE)
    recipe = data["recipes"]["fcn"]
    recipe["max_epochs"] = limit.get("max_epochs")
    recipe["schedule_kw"] = {**recipe["schedule_kw"], **limit.get("schedule_kw", {})}
    cfg = parse_config(data)
    points = grid_points(cfg, cfg.grids[0])
    checks = [p for p in points if p.grid.endswith(BUDGET_CHECK_SUFFIX)]
    for c in checks:
        curve = next(p for p in points if p.grid == "g" and p.n_train == c.n_train and p.target == c.target
                     and p.model_kw == c.model_kw)
        base, longer = schedule_of(curve), schedule_of(c)
        assert longer.budget == 4 * base.budget, (base.budget, longer.budget)
        assert longer == base.scaled(4)


def test_schedule_scaled_rederives_what_follows_from_the_budget():
    from moirescale.train.schedules import schedule_config

    cfg = schedule_config("adjustable", 1e-3, 1000, 100, min_steps=1000, min_epochs=1)
    big = cfg.scaled(4)
    assert big.budget == 4000 and big.eval_every == 80 and big.patience == 400 and big.warmup == 100
    opts = {"min_steps": 1000, "min_epochs": 1}
    assert schedule_config("adjustable", 1e-3, 1000, 100, budget_factor=4, **opts) == big


def test_the_check_needs_the_adjustable_schedule_and_a_factor_above_one():
    bad = copy.deepcopy(BASE)
    bad["recipes"]["fcn"] = {"schedule": "cosine"}
    cfg = parse_config(bad)
    with pytest.raises(UserError, match="adjustable"):
        grid_points(cfg, cfg.grids[0])
    bad = copy.deepcopy(BASE)
    bad["grids"][0]["convergence_check"] = 1
    with pytest.raises(UserError, match="convergence_check"):
        parse_config(bad)


def _rows(grid: str, n_train: int, mse: float, n_r: int = 4) -> list[dict]:
    rng = np.random.default_rng(n_train)
    return [
        {"run_id": f"{grid}-{n_train}-{r}", "grid": grid, "arch": "fcn", "n_layers": 3, "width": 16,
         "n_params": 1000, "target": "J", "n_train": n_train, "realization": r, "seed": r,
         "schedule": "adjustable",
         "test_mse": mse * float(np.exp(0.05 * rng.standard_normal())), "val_mse": mse, "status": "ok",
         "noise_train": 0.0}
        for r in range(n_r)
    ]


@pytest.mark.parametrize(("long_mse", "flagged"), [(0.0062, False), (0.004, True)])
def test_table_flags_a_curve_whose_mse_falls_with_the_larger_budget(long_mse, flagged):
    rows = []
    for k in range(5):
        rows += _rows("g", 224 * 2**k, 0.1 * 2.0**-k)
    rows += _rows("g" + BUDGET_CHECK_SUFFIX, 224 * 2**4, long_mse)
    df = pd.DataFrame(rows)
    curves, checks = split_checks(df)
    assert len(checks) == 4 and len(curves) == 20
    (row,) = convergence_table(df)
    assert row["grid"] == "g" and row["n_train"] == 3584 and row["n_r"] == 4 and row["n_r_long"] == 4
    assert row["ratio"] == pytest.approx(long_mse / 0.00625, rel=0.1)
    assert row["flagged"] is flagged
    an = analyze(df)
    # the check's rows are not a curve of their own; the curve's fit uses only its own five points
    assert len(an.curves_d) == 1 and an.curves_d[0][0]["grid"] == "g"
    assert an.to_dict()["convergence"][0]["flagged"] is flagged
    # advise carries the check: an unconverged curve's N_D holds only for the same budget rule
    adv = advise(an, "J", 0.003)
    (p,) = adv["answers"][0]["per_model"]
    assert p["budget_check"]["converged"] is not flagged and p["budget_check"]["n_train"] == 3584
    assert ("not converged" in format_advice(adv)) is flagged
    unchecked = advise(analyze(pd.DataFrame([r for r in rows if r["grid"] == "g"])), "J", 0.003)
    assert unchecked["answers"][0]["per_model"][0]["budget_check"] is None


def test_a_check_of_fewer_realizations_is_paired_with_the_same_realizations_of_its_curve():
    cfg_d = copy.deepcopy(BASE)
    cfg_d["grids"][0]["convergence_check_realizations"] = 2
    cfg = parse_config(cfg_d)
    checks = [p for p in grid_points(cfg, cfg.grids[0]) if p.grid.endswith(BUDGET_CHECK_SUFFIX)]
    assert len(checks) == 4 and all(c.realizations == (0, 1) for c in checks)
    for bad in (4, None):  # more than the curve has; without a check to restrict
        b = copy.deepcopy(BASE)
        b["grids"][0]["convergence_check_realizations"] = 2 if bad is None else bad
        if bad is None:
            del b["grids"][0]["convergence_check"]
        with pytest.raises(UserError, match="convergence_check_realizations"):
            parse_config(b)
    # the curve's realizations 2, 3 are far worse: a paired table compares 0, 1 only
    rows = _rows("g", 3584, 0.01)
    for r in rows[2:]:
        r["test_mse"] = 1.0
    rows += _rows("g" + BUDGET_CHECK_SUFFIX, 3584, 0.01, n_r=2)
    (row,) = convergence_table(pd.DataFrame(rows))
    assert row["n_r"] == 2 and row["n_r_long"] == 2
    assert row["ratio"] == pytest.approx(1.0, rel=0.15) and not row["flagged"]


def test_realizations_at_cuts_the_dear_points_and_their_check_and_keeps_the_ids():
    cfg_d = copy.deepcopy(BASE)
    cfg_d["grids"][0]["realizations_at"] = {1792: 2}
    cfg = parse_config(cfg_d)
    points = grid_points(cfg, cfg.grids[0])
    by_n = {(p.grid, p.n_train): p.realizations for p in points}
    assert by_n[("g", 224)] == (0, 1, 2) and by_n[("g", 896)] == (0, 1, 2)
    assert by_n[("g", 1792)] == (0, 1)
    assert by_n[("g" + BUDGET_CHECK_SUFFIX, 1792)] == (0, 1)  # the check follows its point
    # the same point with the full N_r keeps its run ids: raising N_r later trains only the missing ones
    base = parse_config(copy.deepcopy(BASE))
    full = {(p.grid, p.n_train, p.target, p.model_kw["width"]): p for p in grid_points(base, base.grids[0])}
    for p in points:
        q = full[(p.grid, p.n_train, p.target, p.model_kw["width"])]
        assert spec_run_ids(p) == spec_run_ids(q)[: len(p.realizations)]
    bad = copy.deepcopy(BASE)
    bad["grids"][0]["realizations_at"] = {1000: 2}  # not one of the grid's N_D
    with pytest.raises(UserError, match="realizations_at"):
        parse_config(bad)
