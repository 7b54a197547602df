"""Hostile input (issue 11): never delete a user's file, never follow a planted link, never show a traceback.

Each bad input ends with one line on stderr and exit code 2 (or a :class:`UserError` in-process), and leaves
the file system as it found it. The subprocess checks are batched: each CLI start imports torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from moirescale import fsio, results
from moirescale.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, timeout: int = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "moirescale.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


def _refused(r: subprocess.CompletedProcess, match: str = "") -> None:
    """Exit 2 with exactly one line on stderr, starting with 'error:' (and containing ``match``)."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr[-2000:]
    assert match in lines[0], lines[0]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (links not followed) with its size and mtime."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


# ------------------------------------------------------------------------------------------ atomic writes
def test_atomic_write_replaces_and_never_follows_links(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.json"
    # Links at every name the old code used for its temporary files, and at the target itself.
    for name in (".out.json.tmp", "out.json.tmp", ".tmp-out.json", f".tmp-out.json.{os.getpid()}"):
        (tmp_path / name).symlink_to(victim)
    fsio.atomic_write(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}' and victim.read_text() == "precious"
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    fsio.atomic_write(link, b"new")
    assert not link.is_symlink() and link.read_bytes() == b"new" and victim.read_text() == "precious"
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & 0o044 == 0o644 & ~_umask() & 0o044  # published with the usual mode, not mkstemp's 0600


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_atomic_path_removes_its_temp_on_failure(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), fsio.atomic_path(target) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(fsio.TMP_PREFIX)
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]
    with pytest.raises(IsADirectoryError):
        fsio.atomic_write(tmp_path, b"x")


def test_open_nofollow_and_stale_temps(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / ".sweep.lock").symlink_to(victim)
    with pytest.raises(OSError):
        fsio.open_nofollow(tmp_path / ".sweep.lock", "a+")
    with fsio.open_nofollow(tmp_path / "log") as fh:
        fh.write("one\n")
    with fsio.open_nofollow(tmp_path / "log") as fh:
        fh.write("two\n")
    assert (tmp_path / "log").read_text() == "one\ntwo\n" and victim.read_text() == "precious"
    # Only the exact temporary names of the atomic writer, for final names the caller owns, and only old ones.
    old, new = tmp_path / ".tmp-a.pt.abcdefgh.pt", tmp_path / ".tmp-b.pt.abcdefgh.pt"
    users = tmp_path / ".tmp-a.pt.x"  # not the writer's pattern: a user's file
    for p in (old, new, users):
        p.write_bytes(b"")
    os.utime(old, (1, 1))
    os.utime(users, (1, 1))
    assert fsio.remove_stale_temps(tmp_path, {"a.pt", "b.pt"}.__contains__) == 1
    assert new.exists() and users.exists() and not old.exists()


def test_report_and_fits_never_follow_planted_links(tmp_path):
    """Regression (issue 11): a link at RUNDIR/report.html.tmp made `report` overwrite the link's target."""
    import synthetic as syn
    from moirescale.analysis import figures as FG
    from moirescale.analysis import pipeline as P
    from moirescale.analysis import report as R
    from moirescale.analysis.fits import FitSettings

    results.append_rows(tmp_path, syn.synthetic_rows(syn.joint_law(), widths=(8,), n_trains=(224, 448, 896),
                                                     n_realizations=2))
    victim = tmp_path.parent / f"{tmp_path.name}-victim.txt"
    victim.write_text("precious")
    for name in ("report.html.tmp", "fits.json.tmp", ".report.html.tmp"):
        (tmp_path / name).symlink_to(victim)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / ".fig1_data_scaling.tmp.png").symlink_to(victim)
    df = results.read_results(tmp_path)
    an = P.analyze(df, FitSettings(n_boot=50, n_boot_nonlinear=20))
    P.write_fits(tmp_path, an)
    figs = FG.make_figures(an, tmp_path)
    R.write_report(an, tmp_path, figs, df)
    assert victim.read_text() == "precious"
    assert (tmp_path / "report.html").read_text().startswith("<!")
    assert json.loads((tmp_path / "fits.json").read_text())["fits"]


def test_checkpoint_never_follows_a_planted_link(tiny_store, tmp_path):
    """Regression (issue 11): a link at checkpoints/.<run_id>.pt.tmp made training overwrite its target."""
    from moirescale.train import TrainSpec, run_spec
    from moirescale.train.spec import run_id

    spec = TrainSpec("fcn", "J", 32, model_kw={"n_layers": 1, "width": 4}, batch_size=16, max_epochs=1,
                     schedule="constant")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    rid = run_id(spec, 0)
    for name in (f".{rid}.pt.tmp", f"{rid}.pt.tmp", f".tmp-{rid}.pt"):
        (ck / name).symlink_to(victim)
    rows = run_spec(spec, tiny_store, tmp_path / "run", device="cpu", progress=False)
    assert rows[0]["status"] == "ok"
    assert victim.read_text() == "precious"
    assert (tmp_path / "run" / rows[0]["checkpoint"]).stat().st_size > 0


# ----------------------------------------------------------------------------------------- demo --fresh
def _demo_config(path: Path, store: Path) -> Path:
    cfg = {
        "name": "demo-test", "seed": 0, "dataset": {"store": str(store)},
        "grids": [{"name": "fcn", "model": {"arch": "fcn", "n_layers": 1, "width": 4},
                   "n_train": {"values": [32]}, "targets": ["J"], "realizations": 1}],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_demo_fresh_never_deletes_a_users_directory(tmp_path):
    """Regression (issue 11): --fresh deleted any directory holding a file called config.yaml."""
    from moirescale.use.demo import run_demo

    cfg = _demo_config(tmp_path / "demo.yaml", tmp_path / "store")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own settings\n")
    (mine / "thesis.tex").write_text("precious")
    before = _snapshot(mine)
    with pytest.raises(UserError, match="not a demo run directory"):
        run_demo(mine, cfg, fresh=True)
    assert _snapshot(mine) == before
    r = _cli("demo", "--out", mine, "--config", cfg, "--fresh")
    _refused(r, "--fresh")
    assert _snapshot(mine) == before


def test_demo_fresh_removes_only_what_the_demo_wrote(tmp_path):
    from moirescale.use.demo import MARKER, _fresh, claim_rundir

    out = tmp_path / "demo"
    claim_rundir(out)
    assert (out / MARKER).is_file()
    # Files with the names the demo writes (rundir.is_own): --fresh removes exactly these.
    for d, name in (("results.parquet", "part-0123456789abcdef0123456789abcdef.parquet"),
                    ("checkpoints", "0123456789abcdef-r0000.pt"), ("logs", "sweep.log"),
                    ("figures", "examples.png")):
        (out / d).mkdir()
        (out / d / name).write_text("made by the demo")
    (out / "config.yaml").write_text("name: demo\n")
    (out / "report.html").write_text("<html>")
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(UserError, match="notes.txt"):
        _fresh(out)
    assert (out / "notes.txt").read_text() == "the user's" and (out / "logs" / "sweep.log").exists()
    (out / "notes.txt").unlink()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    (out / "figures" / "examples.png").unlink()
    (out / "figures" / "examples.png").symlink_to(victim)  # a link with a demo name: removed, not followed
    _fresh(out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER]
    assert (victim / "keep").read_text() == "precious"
    # A marker that is a link (or has other content) is not the demo's marker.
    (out / MARKER).unlink()
    (out / MARKER).symlink_to(victim / "keep")
    (out / "report.html").write_text("<html>")
    with pytest.raises(UserError, match="not a demo run directory"):
        _fresh(out)
    assert (out / "report.html").exists()


def test_demo_refusals_write_nothing(tmp_path):
    from moirescale.use.demo import run_demo

    (tmp_path / "bad.yaml").write_text("name: x\ngrids: []\n")
    with pytest.raises(UserError):
        run_demo(tmp_path / "run", tmp_path / "bad.yaml")
    assert not (tmp_path / "run").exists()
    (tmp_path / "file").write_text("x")
    cfg = _demo_config(tmp_path / "demo.yaml", tmp_path / "store")
    with pytest.raises(UserError, match="not a directory"):
        run_demo(tmp_path / "file", cfg, fresh=True)
    assert (tmp_path / "file").read_text() == "x"


# ------------------------------------------------------------------------------------ in-process CLI runs
def run_cli(*args) -> tuple[int, str, str]:
    """``moirescale ARGS`` through the real entry point, in this process: (exit code, stdout, stderr).

    Any exception other than SystemExit escapes: that is the traceback a user would see.
    """
    from moirescale.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["moirescale", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def refused(result: tuple[int, str, str], match: str = "") -> str:
    """Assert exit 2 with one 'error:' line on stderr (containing ``match``); return that line."""
    code, _, err = result
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (code, err[-2000:])
    assert match in lines[0], lines[0]
    return lines[0]


def _tiny_dataset(**changes) -> dict:
    d = yaml.safe_load((ROOT / "configs" / "dataset-tiny.yaml").read_text())
    for key, value in changes.items():
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return d


def _write_yaml(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def trained_run(tiny_store, tmp_path_factory):
    """A run directory with two tiny trained FCNs (checkpoints and results) on the tiny store."""
    from moirescale.train import TrainSpec, run_spec

    d = tmp_path_factory.mktemp("hostile-run")
    spec = TrainSpec("fcn", "all", 64, realizations=(0, 1), model_kw={"n_layers": 1, "width": 4},
                     batch_size=32, max_epochs=1, schedule="constant")
    results.append_rows(d, run_spec(spec, tiny_store, d, device="cpu", progress=False))
    (d / "dataset.json").write_text(json.dumps({"store": str(tiny_store)}))
    return d


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A run directory with synthetic results (enough points for every fit), no checkpoints."""
    import synthetic as syn

    d = tmp_path_factory.mktemp("hostile-syn")
    results.append_rows(d, syn.synthetic_rows(syn.joint_law(), widths=(4, 16), n_trains=(224, 448, 896, 1792),
                                              n_realizations=3))
    return d


# ------------------------------------------------------------------------------ sizes and memory budgets
@pytest.mark.parametrize("changes, match", [
    ({"image.size_px": 100_000}, "size_px 100000 is above the limit"),
    ({"image.supersample": 100_000}, "rendered points per side"),
    ({"cells_per_side": 100_000}, "unit cells per side, above the limit"),
    ({"labels.theta": [0.1, 1.0], "cells_per_side": 5}, "unit cells per side, above the limit"),
    ({"splits.train": 10**9}, "shards, above the limit"),
    ({"shard_size": 10**6, "splits.train": 10**6, "image.size_px": 512}, "GiB in memory"),
    ({"protocol.n_anneal": 10**12}, "sweeps, above the limit"),
    ({"params.J1": float("nan")}, "J1 must be a finite number"),
    ({"params.lam": float("inf")}, "lam must be a finite number"),
    ({"params.B": -1e300}, "B must be a finite number"),
    ({"seed": 2**70}, "seed must be <="),
])
def test_dataset_config_budgets_and_finite_constants(changes, match):
    from moirescale.data.config import validate_config

    with pytest.raises(UserError, match=match):
        validate_config(_tiny_dataset(**changes), "cfg.yaml")


def test_shipped_configs_are_inside_the_budgets():
    """Every YAML the repo ships validates: dataset configs (within the limits), sweep configs (with the
    dataset config their generate block names), and the variant-comparison specs in studies/ (a typo fails
    here, not an hour into a study)."""
    from moirescale.analysis.variants import load_spec
    from moirescale.data.config import load_config as load_dataset
    from moirescale.sweep.config import load_config as load_sweep

    shipped = sorted((ROOT / "configs").rglob("*.yaml"))
    sweeps = [p for p in shipped if "grids" in yaml.safe_load(p.read_text())]
    assert len(sweeps) >= 10 and len(shipped) - len(sweeps) >= 10
    for p in shipped:
        if p not in sweeps:
            load_dataset(p)
            continue
        gen = load_sweep(p).cfg.dataset.generate
        if gen is not None:
            load_dataset(p.parent / gen.config)
    specs = sorted((ROOT / "studies").glob("*compare*.yaml"))
    assert specs
    for p in specs:
        spec, base = load_spec(p)
        assert spec.variants, p


def test_generate_and_simulate_refuse_before_writing(tmp_path):
    cfg = _write_yaml(tmp_path / "big.yaml", _tiny_dataset(**{"image.size_px": 100_000}))
    refused(run_cli("generate", "--config", cfg, "--out", tmp_path / "store"), "above the limit")
    cfg = _write_yaml(tmp_path / "nan.yaml", _tiny_dataset(**{"params.J1": float("nan")}))
    refused(run_cli("generate", "--config", cfg, "--out", tmp_path / "store"), "J1")
    tiny = ROOT / "configs" / "dataset-tiny.yaml"
    out = tmp_path / "store"
    refused(run_cli("generate", "--config", tiny, "--out", out, "--batch-size", "0"), "--batch-size")
    refused(run_cli("generate", "--config", tiny, "--out", out, "--n-train", str(10**9)), "shards")
    refused(run_cli("simulate", "--theta", "0.2", "--J", "0.5", "--D", "0.5", "--out", tmp_path / "s.npz",
                    "--cells-per-side", "1000"), "above the limit")
    (tmp_path / "dir.npz").mkdir()
    refused(run_cli("simulate", "--theta", "1.5", "--J", "0.5", "--D", "0.5", "--out", tmp_path / "dir.npz"),
            "is a directory")
    refused(run_cli("simulate", "--theta", "1.5", "--J", "0.5", "--D", "0.5", "--out", tmp_path / "s.npz",
                    "--png", tmp_path / "s.xyz"), "a figure name must end in")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.yaml", "dir.npz", "nan.yaml"]


def test_predict_refuses_bombs_and_absurd_pixel_sizes(trained_run, tmp_path):
    from PIL import Image

    from moirescale.limits import MAX_INPUT_PIXELS

    side = int(MAX_INPUT_PIXELS**0.5) + 8
    Image.new("1", (side, side)).save(tmp_path / "bomb.png")  # a few kB on disk, 64+ megapixels decoded
    refused(run_cli("predict", trained_run, tmp_path / "bomb.png"), "megapixels")
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(1, side, side))
    del big
    refused(run_cli("predict", trained_run, tmp_path / "big.npy"), "megapixels")
    np.save(tmp_path / "img.npy", np.zeros((32, 32), np.float32))
    refused(run_cli("predict", trained_run, tmp_path / "img.npy", "--nm-per-px", "1e6"), "--nm-per-px")
    refused(run_cli("predict", trained_run, tmp_path / "img.npy", "--nm-per-px", "1e-6"), "--nm-per-px")
    refused(run_cli("predict", trained_run, tmp_path / "img.npy", "--store", tmp_path / "nowhere"),
            "does not exist")
    code, out, _ = run_cli("predict", trained_run, tmp_path / "img.npy", "--json")
    assert code == 0 and json.loads(out)


# ------------------------------------------------------------------------ numbers, and dry-run == run
def _sweep_doc(store: Path, **grid) -> dict:
    g = {"name": "g", "model": {"arch": "fcn", "n_layers": 1, "width": 4}, "n_train": [32], "targets": ["J"],
         "realizations": 1, "train": {"schedule": "constant", "max_epochs": 1, "batch_size": 16}}
    g.update(grid)
    return {"name": "hostile", "seed": 0, "dataset": {"store": str(store)}, "grids": [g]}


BAD_GRIDS = {  # grids that can only fail: each is refused at planning time, by --dry-run and by the run
    "width that cannot be allocated": ({"model": {"arch": "fcn", "n_layers": 2, "width": 10**6}},
                                       "parameters"),
    "min_steps of 'abc'": ({"train": {"schedule": "adjustable", "schedule_kw": {"min_steps": "abc"}}},
                           "min_steps"),
    "N_D above the pool": ({"n_train": [100_000]}, "training pool"),
    "channel the store lacks": ({"train": {"channels": "net", "max_epochs": 1}}, "net"),
    "infinite weight decay": ({"train": {"weight_decay": float("inf")}}, "weight_decay"),
    "a billion realizations": ({"realizations": 10**9}, "realizations"),
}


@pytest.mark.parametrize("name", list(BAD_GRIDS))
def test_sweep_refuses_impossible_grids_at_planning_time(name, tiny_store, tmp_path):
    grid, match = BAD_GRIDS[name]
    cfg = _write_yaml(tmp_path / "sweep.yaml", _sweep_doc(tiny_store, **grid))
    dry = refused(run_cli("sweep", cfg, "--out", tmp_path / "run", "--dry-run"), match)
    real = refused(run_cli("sweep", cfg, "--out", tmp_path / "run", "--no-progress"), match)
    assert dry == real
    assert not (tmp_path / "run").exists()  # nothing written: no lock, config.yaml or logs/


def test_sweep_options_and_seeds_refused_alike_by_dry_run(tiny_store, tmp_path):
    cfg = _write_yaml(tmp_path / "sweep.yaml", _sweep_doc(tiny_store))
    for extra, match in ((["--workers", "0"], "--workers"), (["--retries", "-1"], "--retries"),
                         (["--device", "tpu"], "--device"), (["--executor", "k8s"], "--executor")):
        assert refused(run_cli("sweep", cfg, "--out", tmp_path / "run", "--dry-run", *extra), match) == \
            refused(run_cli("sweep", cfg, "--out", tmp_path / "run", *extra), match)
    big_seed = _write_yaml(tmp_path / "seed.yaml", {**_sweep_doc(tiny_store), "seed": 2**70})
    refused(run_cli("sweep", big_seed, "--out", tmp_path / "run", "--dry-run"), "seed")
    (tmp_path / "file").write_text("x")
    refused(run_cli("sweep", cfg, "--out", tmp_path / "file", "--dry-run"), "not a directory")
    missing = _write_yaml(tmp_path / "missing.yaml", _sweep_doc(tmp_path / "nostore"))
    refused(run_cli("sweep", missing, "--out", tmp_path / "run", "--dry-run"), "dataset")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "missing.yaml", "seed.yaml", "sweep.yaml"]


def test_refused_sweep_leaves_a_directory_as_found(tiny_store, tmp_path):
    """A refusal after RUNDIR was prepared (its results came from another dataset) undoes what it made."""
    out = tmp_path / "run"
    out.mkdir()
    cfg = _write_yaml(tmp_path / "sweep.yaml", _sweep_doc(tiny_store))
    (out / "config.yaml").write_text(cfg.read_text())
    (out / "dataset.json").write_text(json.dumps({"config_hash": "another dataset"}))
    before = _snapshot(out)
    refused(run_cli("sweep", cfg, "--out", out, "--no-progress"), "another dataset")
    assert _snapshot(out) == before  # no lock, no logs/ left behind
    doc = _sweep_doc(tiny_store)
    doc["dataset"]["generate"] = {"config": str(ROOT / "configs" / "dataset-tiny.yaml"), "n_train": 256}
    bigger = _write_yaml(tmp_path / "bigger.yaml", doc)
    for extra in (["--dry-run"], ["--no-progress"]):
        refused(run_cli("sweep", bigger, "--out", tmp_path / "new", *extra), "smaller than")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("args, match", [
    (["--seed", str(2**70)], "seed"),
    (["--weight-decay", "nan"], "weight_decay"),
    (["--noise", "inf"], "noise_train"),
    (["--lr", "inf"], "learning rate"),
    (["--schedule-opt", "min_epochs=nan"], "min_epochs"),
    (["--width", str(10**9)], "parameters"),
    (["--realizations", str(10**9)], "--realizations"),
    (["--first-realization", "-1"], "--first-realization"),
])
def test_train_cli_refuses_bad_numbers(args, match, tiny_store, tmp_path):
    base = ["train", "--data", tiny_store, "--out", tmp_path / "run", "--n-train", "32", "--n-layers", "1",
            "--width", "4", "--max-epochs", "1", "--no-progress"]
    refused(run_cli(*base, *args), match)
    assert not (tmp_path / "run").exists()


def test_fit_report_advise_refuse_bad_numbers(synthetic_run):
    refused(run_cli("fit", synthetic_run, "--bootstrap", str(10**12)), "--bootstrap")
    refused(run_cli("fit", synthetic_run, "--seed", "-1"), "--seed")
    refused(run_cli("fit", synthetic_run, "--fit-range", "1", "inf"), "--fit-range")
    refused(run_cli("report", synthetic_run, "--subsets", str(10**12)), "--subsets")
    refused(run_cli("advise", synthetic_run, "--target", "J", "--mse", "inf"), "--mse")
    refused(run_cli("advise", synthetic_run, "--target", "Q", "--mse", "0.1"), "target='Q'")
    assert not (synthetic_run / "fits.json").exists()


# ---------------------------------------------------------------- garbage where the tool expects its own
def test_corrupt_results_part_is_one_line(synthetic_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    (run / "config.yaml").write_text(yaml.safe_dump(_sweep_doc(tmp_path / "store")))
    part = sorted((run / "results.parquet").glob("part-*.parquet"))[0]
    part.write_bytes(os.urandom(300))
    for cmd in ("fit", "report", "status"):
        refused(run_cli(cmd, run), part.name)
    single = tmp_path / "single"
    single.mkdir()
    (single / "results.parquet").write_bytes(os.urandom(5000))
    refused(run_cli("fit", single), "results.parquet")


def test_corrupt_checkpoint_and_noise_table_are_one_line(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    np.save(tmp_path / "img.npy", np.zeros((32, 32), np.float32))
    for ck in (run / "checkpoints").glob("*.pt"):
        ck.write_bytes(os.urandom(3000))
    refused(run_cli("predict", run, tmp_path / "img.npy"), "cannot be read")
    (run / "noise.parquet").write_bytes(os.urandom(500))
    refused(run_cli("noise", run, "--n-test", "4"), "noise.parquet")


def test_corrupt_fits_json_in_the_demo(tmp_path):
    from moirescale.use.demo import _up_to_date, alpha_table

    (tmp_path / "fits.json").write_text("[1, 2")
    (tmp_path / "report.html").write_text("<html>")
    assert not _up_to_date(tmp_path)  # redone, not trusted
    with pytest.raises(UserError, match="fits.json"):
        alpha_table(tmp_path)
    (tmp_path / "fits.json").write_text('{"fits": [1]}')
    with pytest.raises(UserError, match="fits.json"):
        alpha_table(tmp_path)


# ------------------------------------------------------------------------------ outputs that cannot be
def test_outputs_taken_by_directories_or_files(synthetic_run, tiny_store, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    (run / "report.html").mkdir()
    refused(run_cli("report", run), "report.html")
    assert not (run / "fits.json").exists() and not (run / "figures").exists()
    (run / "fits.json").mkdir()
    refused(run_cli("fit", run), "fits.json")
    refused(run_cli("data", "show", tiny_store, "--out", tmp_path / "x.xyz"), "a figure name must end in")
    (tmp_path / "file").write_text("x")
    refused(run_cli("train", "--data", tiny_store, "--out", tmp_path / "file", "--n-train", "32"),
            "not a directory")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.parquet").write_text("not a folder")
    refused(run_cli("train", "--data", tiny_store, "--out", bad, "--n-train", "32"), "results.parquet")


# ------------------------------------------------------------------ property: never a traceback
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.lists(st.one_of(st.integers(-5, 10**7), st.floats(allow_nan=True)), max_size=3),
)
# Values each key accepts (on top of the tiny config or the base grid, alone or together): a config made of
# these must be accepted and must carry them. Keys without a list take any value to a refusal; keys listed
# in neither (their validity depends on other keys) get junk only, and the test asks only for no traceback.
VALID_DATASET = {
    "seed": [0, 5, 12345], "backend": ["auto", "numba", "numpy", "torch"], "cells_per_side": [1, 2],
    "shard_size": [1, 16, 64], "splits.train": [1, 32, 100], "splits.val": [0, 8], "splits.test": [0, 8],
    "labels.theta": [[0.5, 2.0], [1.0, 1.0], [1.5, 3.0]], "labels.J": [[0.2, 1.0], [0.6, 0.6]],
    "labels.D": [[0.0, 1.0], [0.0, 0.0]], "params.J1": [2.2, 1.0, -0.5], "params.lam": [0.0, 0.09],
    "params.B": [0.0, 0.3], "protocol.n_anneal": [1, 60], "protocol.n_zero": [0, 30],
    "protocol.t_start": [1.5, 3.0], "protocol.t_end": [0.02, 0.1], "protocol.noise": [0.0, 0.1],
    "protocol.start": ["seeded", "shared"], "image.size_px": [8, 32, 100], "image.fov_nm": [51.2, 160.0],
    "image.supersample": [1, 2], "image.channels": [["top"], ["net", "afm"], ["top", "bottom"]],
    "image.origin": ["random", "fixed"], "jperp.mode": ["scale", "shift"], "batch_size": [1, 64],
}
DATASET_KEYS = [*VALID_DATASET, "unknown_key", "params.mu", "image.colour"]


def _changes(keys: list[str], valid: dict[str, list]) -> st.SearchStrategy:
    """``{key: (is_valid, value)}``: per key either one of its valid values or junk."""
    def value(key: str) -> st.SearchStrategy:
        good = st.sampled_from(valid[key]).map(lambda v: (True, v)) if key in valid else st.nothing()
        return st.one_of(good, JUNK.map(lambda v: (False, v)))
    return st.sampled_from(keys).flatmap(lambda k: value(k).map(lambda v: (k, v)))


def _same(got, want) -> bool:
    def norm(v):
        return list(v) if isinstance(v, (list, tuple)) else v

    return norm(got) == norm(want)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_changes(DATASET_KEYS, VALID_DATASET), max_size=4, unique_by=lambda kv: kv[0]))
@example([])
@example([("image.size_px", (True, 32)), ("protocol.start", (True, "shared")),
          ("labels.J", (True, [0.6, 0.6]))])
@example([("unknown_key", (False, 1))])
def test_property_dataset_configs_are_valid_or_refused(changes):
    """Random values in a dataset config: one UserError or a valid config, never another exception; a config
    of valid values is accepted and reads back as given, one with an unknown key is refused."""
    from moirescale.data.config import resolve_physics, validate_config

    doc = _tiny_dataset(**{k: v for k, (_, v) in changes})
    all_valid = all(ok for _, (ok, _) in changes)
    unknown = any(k not in VALID_DATASET for k, _ in changes)
    try:
        cfg = validate_config(doc, "cfg.yaml")
    except UserError as exc:
        assert not all_valid, f"a valid config was refused: {exc}"
        assert str(exc).startswith("cfg.yaml: ")
        return
    assert not unknown, "an unknown key was accepted"
    sections = dict(zip(("params", "protocol", "image", "jperp"), resolve_physics(cfg), strict=True))
    for key, (ok, value) in changes:
        if not ok or key == "batch_size":  # batch_size is a speed option: not part of the config
            continue
        head, _, leaf = key.partition(".")
        got = getattr(sections.get(head) or getattr(cfg, head), leaf) if leaf else getattr(cfg, head)
        assert _same(got, value), (key, got, value)


VALID_GRID = {
    "model.width": [4, 8, [4, 8]], "model.n_layers": [1, 2, [1, 3]], "n_train": [[32], [16, 128]],
    "realizations": [1, 3], "targets": [["J"], ["theta", "D"], ["all"]], "group_size": [1, 2],
    "train.lr": [1e-3, 0.01], "train.batch_size": [16, 64], "train.max_epochs": [1, 5],
    "train.weight_decay": [0.0, 1e-4], "train.noise_train": [0.0, 0.1],
    "train.channels": ["top", "bottom", "top,bottom"], "train.schedule": ["constant", "cosine", "plateau"],
    "train.optimizer": ["adam", "adamw"],
}
# model.heads / model.patch are not knobs of the FCN grid: refused whatever the value (null: not set)
GRID_KEYS = [*VALID_GRID, "model.heads", "model.patch", "bogus", "train.schedule_kw.min_steps",
             "train.schedule_kw.min_epochs"]
NO_VALID_VALUE = {"model.heads", "model.patch", "bogus"}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_changes(GRID_KEYS, VALID_GRID), max_size=3, unique_by=lambda kv: kv[0]),
       st.one_of(st.none(), st.sampled_from([0, 7]).map(lambda v: (True, v)), JUNK.map(lambda v: (False, v))))
@example([], None)
@example([("model.width", (True, [4, 8])), ("targets", (True, ["all"])),
          ("train.schedule", (True, "cosine"))], (True, 7))
@example([("model.heads", (False, 2))], None)
def test_property_sweep_configs_are_planned_or_refused(changes, seed):
    """Random grid values through the sweep's validators and planner: one UserError or a plan, never another
    exception; a grid of valid values is planned and reads back as given, a knob FCNs lack is refused."""
    from moirescale.sweep.config import LoadedConfig, parse_config
    from moirescale.sweep.plan import DatasetFacts, check_plan

    doc = _sweep_doc(Path("/nonexistent/store"))
    if seed is not None:
        doc["seed"] = seed[1]
    grid = doc["grids"][0]
    for key, (_, value) in changes:
        node = grid
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[leaf] = value
    all_valid = all(ok for _, (ok, _) in changes) and (seed is None or seed[0])
    always_refused = any(k in NO_VALID_VALUE and (k == "bogus" or v is not None) for k, (_, v) in changes)
    facts = DatasetFacts((2, 32, 32), 128, ("top", "bottom"), True)
    try:
        cfg = parse_config(doc, "sweep.yaml")
        check_plan(LoadedConfig(cfg, Path("/nonexistent/sweep.yaml"), doc, ""), facts)
    except UserError as exc:
        assert not all_valid, f"a valid grid was refused: {exc}"
        return
    assert not always_refused, "a knob the FCN does not have was accepted"
    g = cfg.grids[0]
    for key, (ok, value) in changes:
        if not ok:
            continue
        head, _, leaf = key.partition(".")
        got = g.n_train.sizes() if key == "n_train" else getattr(getattr(g, head), leaf) if leaf else \
            getattr(g, head)
        assert _same(got, value if isinstance(value, list) or head != "model" else [value]), (key, got, value)
    if seed is not None and seed[0]:
        assert cfg.seed == seed[1]


ARG = st.one_of(st.integers(-(2**65), 2**65).map(str), st.floats(allow_nan=True).map(str),
                st.sampled_from(["", "abc", "-1", "0", "1e309", "nan", "inf", "all", "J", "fcn", "both"]))


def outcome(result: tuple[int, str, str], ok_marker: str) -> str:
    """What a CLI run was: ``ok`` (exit 0, its normal output), ``refused`` (exit 2, one ``error:`` line: a
    UserError, or an OSError docs/reliability.md names) or ``usage`` (exit 2, typer's usage error for an
    option it could not parse). Anything else fails the test. (A crash in the code raises out of
    :func:`run_cli`: the entry point maps only UserError and the named OSErrors to exit 2.)"""
    code, out, err = result
    assert "Traceback" not in err, err[-2000:]
    if code == 0:
        assert ok_marker in out, out[-2000:]
        return "ok"
    assert code == 2, (code, err[-2000:])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if len(lines) == 1 and lines[0].startswith("error:"):
        return "refused"
    assert "─ Error ─" in err and not any(ln.startswith("error:") for ln in lines), err[-2000:]
    return "usage"


@pytest.fixture(scope="module")
def sweep_cfg(tiny_store, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("prop")
    return _write_yaml(d / "sweep.yaml", _sweep_doc(tiny_store))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["--workers", "--retries", "--device", "--executor", "--address"]),
                          ARG), max_size=3))
@example([])
@example([("--workers", "1"), ("--retries", "0")])
def test_property_sweep_dry_run_arguments(sweep_cfg, opts):
    """Random options of ``sweep --dry-run``: the plan (exit 0), a one-line refusal or a usage error (exit 2),
    never a traceback, never a file written; without options, or with valid ones, the plan."""
    out = sweep_cfg.parent / "run"
    kind = outcome(run_cli("sweep", sweep_cfg, "--out", out, "--dry-run", *[x for o in opts for x in o]),
                   "all (unique)")
    if all((o, v) in {("--workers", "1"), ("--retries", "0")} for o, v in opts):
        assert kind == "ok", opts
    assert not out.exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["--top", "--nm-per-px", "--width", "--n-layers", "--n-train",
                                           "--arch", "--store"]), ARG), max_size=3))
@example([])
@example([("--arch", "fcn"), ("--top", "1")])
def test_property_predict_arguments(trained_run, tiny_store, opts):
    """Random options of ``predict`` on a store sample: a prediction (exit 0), a one-line refusal or a usage
    error (exit 2), never a traceback; without options, or with valid ones, a prediction."""
    kind = outcome(run_cli("predict", trained_run, f"{tiny_store}::test:0", *[x for o in opts for x in o]),
                   "theta")
    if all((o, v) in {("--arch", "fcn"), ("--top", "1")} for o, v in opts):
        assert kind == "ok", opts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["--target", "--mse", "--bootstrap", "--bootstrap-nonlinear",
                                           "--seed", "--arch"]), ARG), max_size=3))
@example([])
@example([("--target", "J"), ("--seed", "0")])
def test_property_advise_arguments(synthetic_run, opts):
    """Random options of ``advise``: an answer (exit 0), a one-line refusal or a usage error (exit 2), never a
    traceback, nothing written; without options, or with valid ones, an answer."""
    args = ["--target", "J", "--mse", "0.1", "--bootstrap", "50", "--bootstrap-nonlinear", "20"]
    kind = outcome(run_cli("advise", synthetic_run, *args, *[x for o in opts for x in o]), "N_D")
    if all((o, v) in {("--target", "J"), ("--seed", "0")} for o, v in opts):
        assert kind == "ok", opts
    assert not (synthetic_run / "fits.json").exists()


def test_cli_maps_only_the_named_os_errors_to_exit_2(monkeypatch):
    """The entry point turns the OSErrors docs/reliability.md names (full disk, quota, read-only, permission,
    a planted link) into one line and exit 2; any other OSError is a bug and escapes as a traceback."""
    import errno

    from moirescale.sweep import status

    def failing(code: int | None):
        def raise_it(*_a, **_k):
            raise OSError(code, os.strerror(code) if code else "something odd", "/x/y")
        return raise_it

    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ELOOP):
        monkeypatch.setattr(status, "status_report", failing(code))
        line = refused(run_cli("status", "/x"), f"/x/y: {os.strerror(code)}")
        assert ("free some space" in line) == (code in (errno.ENOSPC, errno.EDQUOT)), line
    for code in (errno.ENOENT, errno.EISDIR, errno.EIO, errno.EBADF, None):
        monkeypatch.setattr(status, "status_report", failing(code))
        with pytest.raises(OSError):
            run_cli("status", "/x")


# --------------------------------------------------------------------------------------------- full disk
@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where mounting is not allowed)."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk test is skipped")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _grow(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


def _one_error(result: tuple[int, str, str], match: str) -> None:
    code, _, err = result
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], err[-2000:]


def test_full_disk_generate_and_sweep_stop_with_one_line_and_resume(tiny_store, tmp_path):
    with small_disk(tmp_path / "disk", "250k") as disk:
        tiny = ROOT / "configs" / "dataset-tiny.yaml"
        _one_error(run_cli("generate", "--config", tiny, "--out", disk / "store", "--no-progress"),
                   "No space left on device")
        _grow(disk, "4m")
        code, _, err = run_cli("generate", "--config", tiny, "--out", disk / "store", "--no-progress")
        assert code == 0, err
        want = json.loads((tiny_store / "manifest.json").read_text())["shards"]
        got = json.loads((disk / "store" / "manifest.json").read_text())["shards"]
        assert [s["sha256"] for s in got] == [s["sha256"] for s in want]  # the same store as never-full
    with small_disk(tmp_path / "disk2", "40k") as disk:
        doc = _sweep_doc(tiny_store, model={"arch": "fcn", "n_layers": 1, "width": [4, 8]}, realizations=2)
        cfg = _write_yaml(tmp_path / "sweep.yaml", doc)
        _one_error(run_cli("sweep", cfg, "--out", disk / "run", "--no-progress"), "No space left on device")
        _grow(disk, "4m")
        code, _, err = run_cli("sweep", cfg, "--out", disk / "run", "--no-progress")
        assert code == 0, err
        df = results.read_results(disk / "run")
        assert len(df) == 4 and (df["status"] == "ok").all()
        parts = list((disk / "run" / "results.parquet").glob("part-*.parquet"))
        raw = [rid for p in parts for rid in results.read_parquet_file(p)["run_id"]]
        assert len(raw) == len(set(raw)) == 4  # nothing lost, nothing twice


def test_garbage_in_a_run_directory_and_other_inputs(synthetic_run, tiny_store, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    cfg = _write_yaml(run / "config.yaml", _sweep_doc(tiny_store))
    (run / "heartbeat.json").write_bytes(os.urandom(200))
    code, out, err = run_cli("status", run)  # a heartbeat that is not ours: no live sweep
    assert code == 0 and "Traceback" not in err, err
    (run / "dataset.json").write_text("{bad")
    assert run_cli("status", run)[0] in (0, 2)
    refused(run_cli("sweep", cfg, "--out", run, "--dry-run"), "dataset.json")
    (run / "config.yaml").write_bytes(os.urandom(200))
    refused(run_cli("status", run), "config.yaml")
    (tmp_path / "spec.yaml").write_bytes(b"\xff\xfe" + os.urandom(100))
    refused(run_cli("compare-variants", tmp_path / "spec.yaml", "--out", tmp_path / "cmp"), "spec.yaml")
    refused(run_cli("dimension", tiny_store, "--bootstrap", str(10**12)), "--bootstrap")
    demo_cfg = _write_yaml(tmp_path / "demo.yaml", _sweep_doc(tiny_store))
    refused(run_cli("demo", "--out", tmp_path / "demo", "--config", demo_cfg, "--noise-n-test", "-5"),
            "--noise-n-test")
    assert not (tmp_path / "demo").exists() and not (tmp_path / "cmp").exists()
