"""Owners of the last homeless facts (issue 28): run-directory names, the geometric mean, model names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from moirescale import rundir as rd
from moirescale.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("src", "studies") for p in (ROOT / d).rglob("*.py")]
NAMES = [rd.RESULTS, rd.CONFIG, rd.DATASET, rd.HEARTBEAT, rd.LOCK, rd.CHECKPOINTS, rd.LOGS, rd.SWEEP_LOG,
         rd.FITS, rd.NOISE, rd.FIGURES, rd.EXAMPLES, rd.REPORT, rd.DEMO_MARKER, rd.DEMO_TIMING]
# A name as a string of its own, or as the start of a path ("figures/x.png"), in code or a message.
SPELLED = re.compile(r"[\"'](" + "|".join(re.escape(n) for n in NAMES) + r")[\"'/]")
# exp(mean(log ...)), exp(x.mean()), exp(np.log(...).mean()): a geometric mean written out.
INLINE_GEOMEAN = re.compile(r"exp\((np\.)?(nan)?mean\(|exp\([\w.\[\]\"']*\.mean\(\)\)|exp\(np\.log\(")


def test_no_run_directory_name_outside_rundir():
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in SOURCES if p.name != "rundir.py"
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if SPELLED.search(line) and not line.lstrip().startswith("#")]
    # a results row's column "logs" and predict's dict key "checkpoints" are not files
    hits = [h for h in hits if '["logs"]' not in h and '"checkpoints": list' not in h
            and '["checkpoints"]' not in h and 'row["logs"]' not in h]
    assert not hits, "\n".join(hits)


def test_no_inline_geometric_mean_outside_stats():
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in SOURCES if p.name != "stats.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if INLINE_GEOMEAN.search(line)]
    assert not hits, "\n".join(hits)


def test_the_demo_runs_no_subprocess():
    text = (ROOT / "src/moirescale/use/demo.py").read_text()
    assert not re.search(r"^\s*(import subprocess|from subprocess)", text, re.M)


def test_model_label_is_layers_by_width():
    from moirescale.models import model_label

    assert model_label("fcn", 3, 16) == "FCN 3x16"
    assert model_label("fcn", n_layers=2, width=64, n_params=99) == "FCN 2x64"
    assert model_label("resnet18", None, 64) == "ResNet-18 w64"
    assert model_label("vit", float("nan"), 192) == "ViT w192"


def test_dataset_record_round_trip_and_refusal(tmp_path):
    info = {"store": "/s", "splits": {"train": 4, "val": 1, "test": 1}, "image_shape": [1, 8, 8],
            "config_hash": "h"}
    assert rd.read_dataset(tmp_path) == {} and rd.dataset_store(tmp_path) is None
    rd.write_dataset(tmp_path, info)
    assert rd.read_dataset(tmp_path) == info and rd.dataset_store(tmp_path) == "/s"
    rd.dataset_path(tmp_path).write_text('{"store": 5}')
    with pytest.raises(UserError, match="dataset record"):
        rd.read_dataset(tmp_path)
    assert rd.dataset_store(tmp_path) is None


def test_fits_reader_refuses_what_is_not_a_fits_file(tmp_path):
    fit = {"arch": "fcn", "target": "J", "variable": "n_train", "alpha": 1.0}
    rd.write_fits(tmp_path, json.dumps({"fits": [fit]}))
    assert rd.read_fits(tmp_path)["fits"] == [fit]
    for bad in ('{"fits": [1]}', '{"fits": [{"alpha": 1}]}', '{"fits": "x"}',
                json.dumps({"fits": [{**fit, "alpha": "steep"}]})):
        rd.fits_path(tmp_path).write_text(bad)
        with pytest.raises(UserError, match=rd.FITS):
            rd.read_fits(tmp_path)


def test_own_names():
    assert rd.is_own("", rd.FITS) and rd.is_own("", "config.20260101T000000.yaml")
    assert rd.is_own(rd.CHECKPOINTS, "0123456789abcdef-r0001.pt") and not rd.is_own(rd.CHECKPOINTS, "x.pt")
    assert rd.is_own(rd.CHECKPOINTS, "0123456789abcdef-r0001.resume.pt")  # a killed run's training state
    assert not rd.is_own(rd.CHECKPOINTS, "0123456789abcdef-r0001.old.pt")
    assert rd.is_own(rd.FIGURES, rd.EXAMPLES) and not rd.is_own(rd.FIGURES, "mine.png")
    assert rd.is_own(rd.FIGURES, "fig1.png", frozenset({"fig1.png"}))
