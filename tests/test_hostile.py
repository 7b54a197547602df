"""Hostile input (issue 11): never delete a user's file, never follow a planted link, never show a traceback.

Each bad input ends with one line on stderr and exit code 2 (or a :class:`UserError` in-process), and leaves
the file system as it found it. The subprocess checks are batched: each CLI start imports torch.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
    old, new = tmp_path / ".tmp-a.pt.x", tmp_path / ".tmp-b.pt.y"
    old.write_bytes(b"")
    new.write_bytes(b"")
    os.utime(old, (1, 1))
    assert fsio.remove_stale_temps(tmp_path) == 1 and new.exists() and not old.exists()


def test_report_and_fits_never_follow_planted_links(tmp_path):
    """Regression (issue 11): a link at RUNDIR/report.html.tmp made `report` overwrite the link's target."""
    from moirescale.analysis import figures as FG
    from moirescale.analysis import pipeline as P
    from moirescale.analysis import report as R
    from moirescale.analysis import synthetic as syn
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
    for d in ("results.parquet", "checkpoints", "logs", "figures"):
        (out / d).mkdir()
        (out / d / "x").write_text("made by the demo")
    (out / "config.yaml").write_text("name: demo\n")
    (out / "report.html").write_text("<html>")
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(UserError, match="notes.txt"):
        _fresh(out)
    assert (out / "notes.txt").read_text() == "the user's" and (out / "results.parquet" / "x").exists()
    (out / "notes.txt").unlink()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    (out / "figures" / "link").symlink_to(victim)
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
