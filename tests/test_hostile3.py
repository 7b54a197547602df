"""Hostile input, third round (issue 29): what the second round left (docs/reliability.md "Not covered").

Ray's address (``RAY_ADDRESS``, an unreachable or foreign ``--address``) is one line, quickly; a tampered
``fits.json`` is one line; bootstrap maxima are bounded by the time and memory they imply; links planted at
``RUNDIR/checkpoints`` or ``RUNDIR/figures`` after a run starts are refused, not followed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import synthetic as syn
from moirescale import results
from moirescale import rundir as rd
from moirescale.errors import UserError
from test_hostile2 import _run_cli

NDS = (224, 448, 896, 1792)


def _one_line_error(code: int, err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (code, err)
    return lines[0]


# --------------------------------------------------------------------------------------------------- Ray
def _listener(reply: bytes | None) -> tuple[socket.socket, str]:
    """A TCP listener on 127.0.0.1 that is no Ray cluster: silent (``reply`` None) or answering junk."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            if reply is not None:
                conn.sendall(reply)
                conn.close()
            # silent: keep the connection open and say nothing

    threading.Thread(target=serve, daemon=True).start()
    return srv, f"127.0.0.1:{srv.getsockname()[1]}"


def test_ray_addresses_that_are_no_cluster_are_one_line_quickly(monkeypatch):
    """RAY_ADDRESS (honoured like --address) and --address: a closed port, a silent listener and one that
    speaks another protocol each end in one UserError within the probe's 5 s, not Ray's minutes of retries."""
    pytest.importorskip("ray")
    from moirescale.sweep.executors import RayExecutor

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(UserError, match=r"127\.0\.0\.1:1 \(RAY_ADDRESS"):
        RayExecutor("store", "run")
    monkeypatch.delenv("RAY_ADDRESS")
    silent, silent_addr = _listener(None)
    http, http_addr = _listener(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    try:
        for addr, phrase in ((silent_addr, "did not answer"), (http_addr, "not a Ray cluster")):
            t0 = time.monotonic()
            with pytest.raises(UserError, match=phrase) as exc:
                RayExecutor("store", "run", address=addr)
            assert time.monotonic() - t0 < 10 and "\n" not in str(exc.value) and "--address" in str(exc.value)
    finally:
        silent.close()
        http.close()


def test_sweep_with_ray_address_set_is_one_line_exit_2(tmp_path, monkeypatch):
    """`sweep --executor ray` with RAY_ADDRESS naming no cluster: one line, exit 2, nothing left behind
    (it crashed with Ray's ValueError before); the local executor ignores RAY_ADDRESS."""
    pytest.importorskip("ray")
    store = _imported_store(tmp_path)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "r", "seed": 0, "dataset": {"store": str(store)},
        "grids": [{"name": "g", "model": {"arch": "fcn", "n_layers": 1, "width": 4}, "n_train": [8],
                   "targets": ["all"], "realizations": 1,
                   "train": {"schedule": "constant", "max_epochs": 1, "batch_size": 8,
                             "channels": "c0,c1"}}]}))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    code, err = _run_cli("sweep", cfg, "--out", tmp_path / "run", "--executor", "ray", "--no-progress")
    assert "RAY_ADDRESS" in _one_line_error(code, err)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------- fits.json
def _fitted_run(folder: Path) -> Path:
    from moirescale.analysis import pipeline as P
    from moirescale.analysis.fits import FitSettings

    rows = syn.synthetic_rows(syn.joint_law(B=300.0, b=0.4), widths=(8, 64), targets=("theta",),
                              n_trains=NDS, n_realizations=4, sigma=0.1)
    results.append_rows(folder, rows)
    P.write_fits(folder, P.analyze(results.read_results(folder), FitSettings(n_boot=50, n_boot_nonlinear=20)))
    return folder


@pytest.mark.parametrize("tamper, where", [
    (lambda d: d["fits"][0].update(alpha="steep"), "fits.0.alpha"),
    (lambda d: d["fits"][0].update(arch=5), "fits.0.arch"),
    (lambda d: d["fits"][0].pop("target"), "fits.0.target"),
    (lambda d: d["fits"][0].update(n_params=-3), "fits.0.n_params"),
    (lambda d: d.update(convergence=[{"grid": "g", "ratio": 0.5}]), "convergence.0.flagged"),
    (lambda d: d.update(joint={"a": 1}), "joint"),
])
def test_tampered_fits_json_is_one_line_in_compare_variants(tmp_path, tamper, where):
    run = _fitted_run(tmp_path / "run")
    assert rd.read_fits(run)["fits"]  # as written: valid
    doc = json.loads(rd.fits_path(run).read_text())
    tamper(doc)
    rd.fits_path(run).write_text(json.dumps(doc))
    with pytest.raises(UserError, match=where.replace(".", r"\.")):
        rd.read_fits(run)
    est = {"d": 4.0, "lo": 3.6, "hi": 4.4}
    (tmp_path / "d.json").write_text(json.dumps({"n": 100, "channels": "top", "estimators": {"twonn": est}}))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(
        {"name": "x", "estimator": "twonn",
         "variants": [{"name": "a", "run": "run", "dimension": "d.json"}]}))
    code, err = _run_cli("compare-variants", tmp_path / "s.yaml", "--out", tmp_path / "out")
    assert "not a fits.json" in _one_line_error(code, err)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------- bootstrap maxima
def test_bootstrap_maxima_are_bounded_by_time_and_memory(tmp_path, capsys):
    """`fit`/`report`/`advise` refuse bootstrap settings whose nonlinear refits would run over an hour or
    whose resampling would need over 2 GiB on this machine, before fitting anything; a long but affordable
    fit says how long it takes."""
    from moirescale.analysis.fits import FitSettings
    from moirescale.analysis.pipeline import check_bootstrap_budget
    from moirescale.stats import point_stats

    run = tmp_path / "run"
    results.append_rows(run, syn.synthetic_rows(syn.joint_law(), widths=(4, 8, 16, 32, 64),
                                                targets=("theta", "J"), n_trains=NDS, n_realizations=3,
                                                sigma=0.1))
    t0 = time.monotonic()
    code, err = _run_cli("fit", run, "--floor", "--bootstrap-nonlinear", "100000")
    assert "--bootstrap-nonlinear 100000" in _one_line_error(code, err) and "limit 60 min" in err
    code, err = _run_cli("report", run, "--floor", "--bootstrap-nonlinear", "100000")
    assert "limit 60 min" in _one_line_error(code, err)
    assert time.monotonic() - t0 < 60 and not rd.fits_path(run).exists()
    df = results.read_results(run)
    st = FitSettings(n_boot_nonlinear=20000)
    seconds = check_bootstrap_budget(st, point_stats(df), df)
    assert 60 < seconds < 3600 and "about" in capsys.readouterr().err  # long, legitimate: said up front
    wide = pd.DataFrame({"realization": np.arange(1000)})  # 1000 realization labels
    with pytest.raises(UserError, match="GiB"):
        check_bootstrap_budget(FitSettings(n_boot=100_000), point_stats(df), wide)


# ------------------------------------------------------------------------------- links planted mid-run
def test_links_planted_after_start_are_refused_by_checkpoints_and_figures(tmp_path):
    import torch

    from moirescale.analysis import figures
    from moirescale.train.run import _save_checkpoint

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    _save_checkpoint(run, rd.checkpoint_rel("a"), {"w": torch.zeros(1)}, {})
    assert (run / "checkpoints" / "a.pt").is_file()
    (run / "checkpoints" / "a.pt").unlink()
    (run / "checkpoints").rmdir()
    (run / "checkpoints").symlink_to(elsewhere, target_is_directory=True)  # planted while training
    with pytest.raises(UserError, match="link or not a directory"):
        _save_checkpoint(run, rd.checkpoint_rel("b"), {"w": torch.zeros(1)}, {})
    (run / "figures").symlink_to(elsewhere, target_is_directory=True)  # planted while the report runs
    import matplotlib.pyplot as plt

    with pytest.raises(UserError, match="link or not a directory"):
        figures._save(plt.figure(), rd.figures_dir(run), "fig1", run)
    assert list(elsewhere.iterdir()) == []


def test_training_states_are_never_deleted_through_a_link(tmp_path):
    """rundir.discard_states deletes ``<run id>.resume.pt`` files in the folder it is given, never in the
    target of a link planted at that folder's place or at a state's name."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a-r0000.resume.pt").write_bytes(b"theirs")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    assert rd.discard_states(run / "checkpoints", ["a-r0000"]) == []
    (run / "checkpoints").unlink()
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "a-r0000.resume.pt").symlink_to(elsewhere / "a-r0000.resume.pt")
    (run / "checkpoints" / "b-r0000.resume.pt").write_bytes(b"ours")
    gone = rd.discard_states(run / "checkpoints", ["a-r0000", "b-r0000", "c-r0000"])
    assert gone == [run / "checkpoints" / "b-r0000.resume.pt"]
    assert (elsewhere / "a-r0000.resume.pt").read_bytes() == b"theirs"


def _imported_store(tmp_path: Path) -> Path:
    import h5py

    from moirescale.data.importer import import_store

    rng = np.random.default_rng(1)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"] = rng.normal(size=(40, 2, 8, 8))
        f["size"] = rng.uniform(0, 1, 40)
        f["phase"] = rng.uniform(0, 1, 40)
    return import_store(tmp_path / "d.h5", None, tmp_path / "store", val="8", test="8")
