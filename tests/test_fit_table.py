"""``moirescale fit TABLE``: results from anywhere (.csv, .parquet), checked, fitted and reported."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from moirescale import results
from moirescale.analysis import commands as C
from moirescale.analysis import pipeline as P
from moirescale.analysis import table as T
from moirescale.analysis.fits import FitSettings
from moirescale.errors import UserError

ND = [224 * 2**k for k in range(8)]
ALPHA = 1.5


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "moirescale.cli", *map(str, args)], capture_output=True, text=True,
        timeout=timeout,
    )


def _curve_rows(seed=5, n_r=6, sigma=0.3, top=10.0):
    """A curve 1e3 N^-1.5 with log-normal realizations; the largest N_D's networks are ``top`` times too high
    (they did not converge), which pulls a least-squares fit of alpha_D down by ~0.2."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(ND):
        bad = top if i == len(ND) - 1 else 1.0
        for _ in range(n_r):
            mse = 1e3 * n**-ALPHA * math.exp(sigma * rng.standard_normal()) * bad
            rows.append({"n_train": n, "test_mse": mse})
    return rows


def _refused(r, match):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], r.stderr


def _strict(name):
    raise ValueError(f"non-standard JSON constant {name}")


# ------------------------------------------------------------------------------------------ the CLI


def test_fit_table_huber_recovers_where_l2_does_not_and_report_draws_it(tmp_path):
    table = tmp_path / "curve.csv"
    pd.DataFrame(_curve_rows()).to_csv(table, index=False)
    r = _cli("fit", table, "--loss", "huber", "--out", tmp_path / "huber", "--bootstrap", 200)
    assert r.returncode == 0, r.stderr
    assert "(huber loss)" in r.stdout
    C.fit(table, fit_range=None, floor=False, bootstrap=200, bootstrap_nonlinear=200, seed=0,
          out=tmp_path / "l2")  # least squares, in-process (the same command)
    hu = json.loads((tmp_path / "huber" / "fits.json").read_text(), parse_constant=_strict)
    l2 = json.loads((tmp_path / "l2" / "fits.json").read_text(), parse_constant=_strict)
    (fh,), (fl,) = hu["fits"], l2["fits"]
    assert hu["settings"]["loss"] == fh["loss"] == "huber" and l2["settings"]["loss"] == fl["loss"] == "l2"
    assert fh["alpha_lo"] <= ALPHA <= fh["alpha_hi"] and abs(fh["alpha"] - ALPHA) < 0.05
    assert abs(fl["alpha"] - ALPHA) > 0.15
    assert (fh["arch"], fh["target"], fh["n_points"]) == ("table", "y", 8)
    assert hu["settings"]["extra"]["source"] == str(table)

    # --json prints the same document, strict JSON (no NaN / Infinity), and writes nothing without --out
    r = _cli("fit", table, "--loss", "huber", "--json", "--bootstrap", 200)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout, parse_constant=_strict) == hu
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.csv", "huber", "l2"]

    # the --out DIR is a run directory: report draws it and keeps the loss fit recorded
    r = _cli("report", tmp_path / "huber", "--bootstrap", 100, "--subsets", 5)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "huber"
    assert (out / "report.html").stat().st_size > 5_000
    assert (out / "figures" / "fig1_data_scaling.png").exists()
    page = (out / "report.html").read_text()
    assert "Huber loss" in page and "curve.csv" in page
    after = json.loads((out / "fits.json").read_text(), parse_constant=_strict)
    assert after["settings"]["loss"] == "huber" and after["fits"][0]["alpha"] == pytest.approx(fh["alpha"])


def test_a_table_given_its_mean_guess_marks_a_flat_curve_in_fit_report_and_advise(tmp_path):
    """A table has no store, so no mean guess unless given: with ``--mean-guess`` a curve that ends at it is
    marked by fit, and the --out DIR keeps it for report and advise (recorded in fits.json)."""
    rng = np.random.default_rng(3)
    flat = [{"n_train": n, "target": "J", "test_mse": 0.082 * n**-0.005 * math.exp(0.02 * rng.normal())}
            for n in ND for _ in range(3)]
    falling = [{"n_train": n, "target": "theta", "test_mse": 2.0 * n**-1.0} for n in ND for _ in range(3)]
    table = tmp_path / "t.csv"
    pd.DataFrame(flat + falling).to_csv(table, index=False)
    out = tmp_path / "out"
    r = _cli("fit", table, "--out", out, "--bootstrap", 100, "--mean-guess", "J=0.084",
             "--mean-guess", "theta=0.083")
    assert r.returncode == 0, r.stderr
    (j_line,) = [x for x in r.stdout.splitlines() if " J " in x]
    (t_line,) = [x for x in r.stdout.splitlines() if " theta " in x]
    assert "at the mean guess" in j_line and "at the mean guess" not in t_line
    doc = json.loads((out / "fits.json").read_text(), parse_constant=_strict)
    assert doc["settings"]["extra"]["mean_guess"] == {"J": 0.084, "theta": 0.083}
    by = {f["target"]: f for f in doc["fits"]}
    last = np.exp(np.mean(np.log([r["test_mse"] for r in flat if r["n_train"] == ND[-1]])))
    assert by["J"]["variance_left"] == pytest.approx(last / 0.084, rel=1e-9)
    assert by["theta"]["variance_left"] == pytest.approx(2.0 / ND[-1] / 0.083, rel=1e-9)

    r = _cli("report", out, "--bootstrap", 100, "--bootstrap-nonlinear", 20, "--subsets", 5)
    assert r.returncode == 0, r.stderr
    again = json.loads((out / "fits.json").read_text(), parse_constant=_strict)
    assert again["settings"]["extra"] == doc["settings"]["extra"]  # the report keeps what fit recorded
    assert {f["target"]: f["variance_left"] for f in again["fits"]} == pytest.approx(
        {t: f["variance_left"] for t, f in by.items()})
    assert "at the mean guess" in (out / "report.html").read_text()
    r = _cli("advise", out, "--target", "J", "--mse", "0.05", "--bootstrap", 100)
    assert r.returncode == 0, r.stderr
    assert "at the mean guess" in r.stdout
    assert "the model: " in r.stdout  # a table without n_params: its one model has no size (this crashed)


def _csv(tmp_path, text):
    p = tmp_path / "t.csv"
    p.write_text(text)
    return p


GOOD = "n_train,test_mse\n" + "".join(f"{n},{1e3 * n**-1.5}\n" for n in ND[:4])


@pytest.mark.parametrize(
    "text, args, match",
    [
        ("n_train,mse\n224,0.1\n", [], "lacks column(s) test_mse"),
        ("n_train,test_mse\n224,abc\n448,0.1\n", [], "not a number"),
        ("n_train,test_mse\n0,0.1\n448,0.1\n", [], "n_train, row 1"),
        ("n_train,test_mse\n224,inf\n448,0.1\n", [], "finite"),
        ("n_train,test_mse\n", [], "no rows"),
        (GOOD, ["--loss", "l1"], "--loss"),
        (GOOD, ["--loss", "huber", "--huber-delta", "0"], "--huber-delta"),
        (GOOD, None, "--out DIR"),
        (GOOD, ["--mean-guess", "y"], "LABEL=MSE"),
        (GOOD, ["--mean-guess", "y=0"], "finite MSE > 0"),
        (GOOD, ["--mean-guess", "y=0.1", "--mean-guess", "y=0.2"], "twice"),
        (GOOD, ["--mean-guess", "theta=0.08"], "the table's targets are y"),
    ],
    ids=["missing-column", "non-numeric", "non-positive", "non-finite", "empty", "bad-loss", "bad-delta",
         "no-out", "guess-no-value", "guess-zero", "guess-twice", "guess-unknown-label"],
)
def test_cli_refusals_are_one_line_exit_2_and_write_nothing(tmp_path, text, args, match):
    table = _csv(tmp_path, text)
    out = tmp_path / "out"
    cmd = ["fit", table] + (["--out", out] + args if args is not None else [])
    _refused(_cli(*cmd), match)
    assert not out.exists()


def test_cli_refuses_out_for_a_run_dir_and_a_sweep_dir_as_out(tmp_path):
    run = tmp_path / "run"
    results.append_rows(run, [{"run_id": "a", "arch": "fcn", "n_train": 224, "test_mse": 0.1,
                               "status": "ok"}])
    _refused(_cli("fit", run, "--out", tmp_path / "x"), "--out is for a TABLE")
    _refused(_cli("fit", run, "--mean-guess", "theta=0.08"), "--mean-guess is for a TABLE")
    table = _csv(tmp_path, GOOD)
    _refused(_cli("fit", table, "--out", run), "already holds a sweep's results table")
    assert not (run / "fits.json").exists() and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------ the boundary


@pytest.mark.parametrize(
    "text, match",
    [
        ("a,b\n1,2\n", "lacks column(s) n_train, test_mse"),
        ("n_train,test_mse\n224,\n", "test_mse, row 1 is empty"),
        ("n_train,test_mse\n224,0.1\n448,-0.1\n", "test_mse, row 2 is -0.1"),
        ("n_train,test_mse\n224,0.1\n448,nan\n", "test_mse, row 2"),
        ("n_train,test_mse\n224.5,0.1\n", "whole number"),
        ("n_train,test_mse\n1e30,0.1\n", "2^53"),
        ("n_train,test_mse\ntrue,0.1\n", "true/false"),
        ("n_train,test_mse,n_params\n224,0.1,-5\n", "n_params, row 1"),
        ("n_train,test_mse,realization\n224,0.1,-1\n", "realization, row 1"),
        ("n_train,test_mse,realization\n224,0.1,0\n224,0.2,0\n", "realization 0 appears twice"),
        ("n_train,test_mse,arch\n224,0.1,\n", "arch, row 1 is empty"),
        ("\xff\xfe\x00garbage", "readable CSV"),
        ("", "no rows"),
    ],
)
def test_read_table_refuses_bad_tables(tmp_path, text, match):
    p = tmp_path / "t.csv"
    p.write_bytes(text.encode("latin-1"))
    with pytest.raises(UserError, match=match.replace("(", r"\(").replace(")", r"\)").replace("^", r"\^")):
        T.read_table(p)


def test_read_table_refuses_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        T.read_table(tmp_path / "nope.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="not a readable Parquet table"):
        T.read_table(tmp_path / "bad.parquet")
    assert T.is_table(tmp_path / "x.CSV") and not T.is_table(tmp_path) and not T.is_table(tmp_path / "x.txt")


def test_read_table_defaults_and_realizations_by_row_order(tmp_path):
    p = _csv(tmp_path, "n_train,test_mse,note\n224,0.1,a\n448,0.05,b\n224,0.12,c\n224,0.09,d\n448,0.06,e\n")
    df = T.read_table(p)
    assert list(df.columns) == results.COLUMNS
    assert set(df["arch"]) == {"table"} and set(df["target"]) == {"y"} and set(df["status"]) == {"ok"}
    assert df["n_params"].isna().all() and df["run_id"].is_unique
    assert df["realization"].tolist() == [0, 0, 1, 2, 1]  # the row's order within its point (its N_D)
    assert df["n_train"].tolist() == [224, 448, 224, 224, 448]


def test_parquet_table_with_every_column_gives_the_joint_fit(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for m in (1000, 4000, 16000):
        for n in ND[:5]:
            for r in range(3):
                law = 1e-3 + 3.0 * m**-0.6 + 800.0 * n**-1.6
                rows.append({"n_params": m, "n_train": n, "realization": r, "arch": "paper", "target": "loss",
                             "test_mse": law * math.exp(0.1 * rng.standard_normal())})
    table = tmp_path / "paper.parquet"
    pd.DataFrame(rows).to_parquet(table)
    df = T.read_table(table)
    assert set(df["arch"]) == {"paper"} and df["realization"].max() == 2 and df["n_params"].notna().all()
    out = tmp_path / "out"
    C.fit(table, fit_range=None, floor=False, bootstrap=100, bootstrap_nonlinear=20, seed=0, out=out)
    doc = json.loads((out / "fits.json").read_text(), parse_constant=_strict)
    assert len(doc["joint"]) == 1 and abs(doc["joint"][0]["b"] - 1.6) < 0.2
    assert len([f for f in doc["fits"] if f["variable"] == "n_train"]) == 3
    # the normalised copy is the table report reads: one file, replaced (not appended to) by a second fit
    assert (out / "results.parquet").is_file() and len(results.read_results(out)) == len(rows)
    C.fit(table, fit_range=None, floor=False, bootstrap=100, bootstrap_nonlinear=20, seed=0, out=out)
    assert len(results.read_results(out)) == len(rows)


def test_fits_json_is_strict_json(tmp_path):
    p = _csv(tmp_path, GOOD)
    an = P.analyze(T.read_table(p), FitSettings(n_boot=100))
    an.extrapolation.append({"kind": "test", "z": float("nan"), "w": float("inf"), "v": np.float64("-inf")})
    doc = json.loads(P.fits_json(an), parse_constant=_strict)
    assert doc["extrapolation"][-1] == {"kind": "test", "z": None, "w": "inf", "v": "-inf"}
