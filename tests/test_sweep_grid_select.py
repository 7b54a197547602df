"""``sweep --grid NAME``: run only some grids of a config into a run directory that records the whole config.

Real training on the real ``tiny_store`` through the real ``moirescale`` command: the selected grid (with its
budget check) runs first, the rest is pending in ``status`` and a later run without ``--grid`` trains only the
rest; an unknown name is refused with one line, exit 2, and nothing written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from moirescale import results
from moirescale.results import BUDGET_CHECK_SUFFIX

CLI = [sys.executable, "-m", "moirescale.cli"]
FAST = {"min_steps": 20, "min_epochs": 1}


def _doc(store: Path) -> dict[str, Any]:
    return {
        "name": "pick",
        "seed": 3,
        "dataset": {"store": str(store)},
        "recipes": {"fcn": {"lr": 3e-3, "batch_size": 32, "schedule_kw": FAST}},
        "grids": [
            {"name": "first", "model": {"arch": "fcn", "n_layers": 1, "width": 4},
             "n_train": [32], "targets": ["J"], "realizations": 2},
            {"name": "second", "model": {"arch": "fcn", "n_layers": 1, "width": 8},
             "n_train": [32, 64], "targets": ["J"], "realizations": 2, "convergence_check": 2},
        ],
    }


def _sweep(cfg: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "sweep", str(cfg), "--out", str(out), "--workers", "1", "--no-progress",
                           *extra], capture_output=True, text=True, timeout=400)


def test_grid_runs_only_that_grid_and_a_later_run_finishes_the_rest(tiny_store, tmp_path):
    cfg = tmp_path / "pick.yaml"
    cfg.write_text(yaml.safe_dump(_doc(tiny_store)))
    out = tmp_path / "run"

    p = _sweep(cfg, out, "--dry-run", "--grid", "second")
    assert p.returncode == 0, p.stderr
    assert "second" in p.stdout and "first" not in p.stdout  # the estimate is the selection's

    p = _sweep(cfg, out, "--grid", "second")
    assert p.returncode == 0, p.stderr
    df = results.read_results(out)
    grids = sorted(df["grid"].unique())
    assert grids == ["second", "second" + BUDGET_CHECK_SUFFIX]  # the grid and its budget check, nothing else
    assert len(df) == 2 * 2 + 2 and (df["status"] == "ok").all()
    assert yaml.safe_load((out / "config.yaml").read_text()) == _doc(tiny_store)  # the whole config

    st = subprocess.run([*CLI, "status", str(out)], capture_output=True, text=True, timeout=300)
    assert st.returncode == 0, st.stderr
    assert "first" in st.stdout  # still pending there

    p = _sweep(cfg, out, "--grid", "second")
    assert p.returncode == 0 and "nothing to do" in p.stdout and "second" in p.stdout

    p = _sweep(cfg, out)  # no --grid: only what is left
    assert p.returncode == 0, p.stderr
    assert "(2 networks) to run, 6 runs already done" in p.stdout, p.stdout
    df2 = results.read_results(out)
    assert len(df2) == len(df) + 2
    assert sorted(df2["grid"].unique()) == ["first", *grids]


def test_unknown_grid_is_refused_before_anything_is_written(tiny_store, tmp_path):
    cfg = tmp_path / "pick.yaml"
    cfg.write_text(yaml.safe_dump(_doc(tiny_store)))
    out = tmp_path / "run"
    p = _sweep(cfg, out, "--grid", "second", "--grid", "thrid")
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "thrid" in p.stderr and "first, second" in p.stderr  # names the choices
    assert not out.exists()


def test_status_of_a_live_grid_selection_counts_only_its_grids(tiny_store, tmp_path):
    """A live ``sweep --grid`` (its heartbeat names the selection): status says so, and its ETA counts only
    the selected grids' networks, not the whole config's."""
    import os
    import time

    from rich.console import Console

    from moirescale import rundir as rd
    from moirescale.sweep.status import status_report

    doc = _doc(tiny_store)
    doc["grids"].append({**doc["grids"][0], "name": "third", "n_train": [64]})
    cfg = tmp_path / "pick.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    assert _sweep(cfg, out, "--grid", "first").returncode == 0  # rows, so there is a throughput
    beat = {"pid": os.getpid(), "host": "here", "executor": "local", "workers": 1, "grids": ["second"],
            "started_at": "2026-01-01T00:00:00+00:00", "updated_at": "now", "updated_unix": time.time(),
            "finished": False, "queued": 3, "running": []}
    rd.write_heartbeat(out, beat)
    con = Console(record=True, width=200)
    status_report(out, con)
    text = con.export_text()
    assert "grids second only" in text, text
    assert "ETA for 6 networks of grids second" in text, text  # 2 x 2 + the check's 2; not third's 2

    rd.write_heartbeat(out, {**beat, "grids": ["third:J"]})  # one target of a grid
    con = Console(record=True, width=200)
    status_report(out, con)
    assert "ETA for 2 networks of grids third:J" in con.export_text(), con.export_text()

    rd.write_heartbeat(out, {**beat, "grids": ["third:D"]})  # a target the config no longer has: all of it
    con = Console(record=True, width=200)
    status_report(out, con)
    assert "ETA for 8 networks:" in con.export_text()

    rd.write_heartbeat(out, {**beat, "grids": []})  # a sweep of the whole config: everything left
    con = Console(record=True, width=200)
    status_report(out, con)
    assert "ETA for 8 networks:" in con.export_text()


def test_grid_target_runs_one_target_with_the_whole_grids_run_ids(tiny_store, tmp_path):
    """``--grid second:D`` trains only D's points of the grid and D's budget check, under the same run ids as
    the whole grid's (a grid's name is not part of a run id), so a later ``--grid second`` trains only J."""
    doc = _doc(tiny_store)
    doc["grids"][1]["targets"] = ["J", "D"]
    cfg = tmp_path / "pick.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    part, whole = tmp_path / "part", tmp_path / "whole"

    p = _sweep(cfg, part, "--grid", "second:D")
    assert p.returncode == 0, p.stderr
    df = results.read_results(part)
    assert set(df["target"]) == {"D"} and len(df) == 2 * 2 + 2  # two N_D x N_r 2, and the check's 2
    assert (df["grid"] == "second" + BUDGET_CHECK_SUFFIX).sum() == 2

    assert _sweep(cfg, whole, "--grid", "second").returncode == 0
    dw = results.read_results(whole)
    assert set(dw["run_id"]) > set(df["run_id"])  # D's runs are the whole grid's D runs
    assert set(dw.loc[dw["target"] == "D", "run_id"]) == set(df["run_id"])

    p = _sweep(cfg, part, "--grid", "second")  # the rest of the grid: J only
    assert p.returncode == 0, p.stderr
    assert "(6 networks) to run, 6 runs already done" in p.stdout, p.stdout
    assert set(results.read_results(part)["run_id"]) == set(dw["run_id"])


def test_grid_target_that_the_grid_lacks_is_refused(tiny_store, tmp_path):
    cfg = tmp_path / "pick.yaml"
    cfg.write_text(yaml.safe_dump(_doc(tiny_store)))
    out = tmp_path / "run"
    p = _sweep(cfg, out, "--grid", "second:D")  # the grid's targets are [J]
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "'D' is not a target of grid second" in p.stderr and "J" in p.stderr
    assert not out.exists()


def _started_grids(out: Path) -> list[str]:
    """The grids of the jobs in the order the sweep started them (its log's ``start GRID ...`` lines)."""
    from moirescale import rundir as rd

    lines = rd.log_path(out).read_text().splitlines()
    return [ln.split(" start ", 1)[1].split()[0] for ln in lines if " start " in ln]


def test_longest_first_starts_the_costliest_job_first(tiny_store, tmp_path):
    """``--longest-first`` starts the jobs by estimated cost (the costliest first: grid second's N_D 64
    check, at twice the budget); without it, the config's order. Both train the same runs."""
    cfg = tmp_path / "pick.yaml"
    cfg.write_text(yaml.safe_dump(_doc(tiny_store)))
    plain, longest = tmp_path / "plain", tmp_path / "longest"
    assert _sweep(cfg, plain).returncode == 0
    p = _sweep(cfg, longest, "--longest-first")
    assert p.returncode == 0, p.stderr
    assert _started_grids(plain) == ["first", "second", "second", "second" + BUDGET_CHECK_SUFFIX]
    assert _started_grids(longest)[0] == "second" + BUDGET_CHECK_SUFFIX
    assert _started_grids(longest)[-1] == "first"  # width 4 at N_D 32: the cheapest
    assert set(results.read_results(plain)["run_id"]) == set(results.read_results(longest)["run_id"])


def test_select_grids_combines_whole_grids_and_targets(tiny_store, tmp_path):
    """A grid named whole wins over its GRID:TARGET; several targets of a grid keep the grid's own order;
    the config's grid order is kept; 'all' (one network for every label) is a target like any other."""
    import pytest

    from moirescale.errors import UserError
    from moirescale.sweep.config import load_config
    from moirescale.sweep.plan import select_grids

    doc = _doc(tiny_store)
    doc["grids"][0]["targets"] = ["theta", "J", "D"]
    doc["grids"][1]["targets"] = ["J", "all"]
    cfg = tmp_path / "pick.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    loaded = load_config(cfg)

    def picked(*names: str) -> list[tuple[str, list[str]]]:
        return [(g.name, list(g.targets)) for g in select_grids(loaded, names).cfg.grids]

    assert picked("first:D", "first:theta") == [("first", ["theta", "D"])]
    assert picked("first:D", "first") == [("first", ["theta", "J", "D"])]
    assert picked("second:all", "first:J") == [("first", ["J"]), ("second", ["all"])]
    with pytest.raises(UserError, match="'D' is not a target of grid second"):
        select_grids(loaded, ["second:D"])
