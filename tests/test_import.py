"""`moirescale data import` (issue 26): stores from a user's images with labels of their own names, their
refusals, and the whole chain (import -> train -> fit -> report -> predict) on them. Also the worked example
of docs/usage.md on scikit-learn's digits (real data that no one here made)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moirescale.data.importer import apply_pixel_map, import_store
from moirescale.data.store import open_store, read_manifest, verify_store
from moirescale.errors import UserError
from moirescale.labels import LabelScaler, order_targets, target_index
from moirescale.results import read_results


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moirescale.cli", *args], capture_output=True, text=True, timeout=300
    )


def write_pngs(folder: Path, n: int = 120, size: int = 10, seed: int = 0) -> np.ndarray:
    """``n`` grey PNGs whose brightness and stripe period are the labels ``brightness`` and ``period``."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = ["file,brightness,period"]
    labels = np.empty((n, 2))
    x = np.arange(size)
    for i in range(n):
        b, p = rng.uniform(40, 200), rng.uniform(2, 6)
        img = b + 50 * np.sin(2 * np.pi * x[None, :] / p) + rng.normal(0, 3, (size, size))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"im{i:03d}.png")
        rows.append(f"im{i:03d}.png,{b:.6f},{p:.6f}")
        labels[i] = b, p
    (folder.parent / "labels.csv").write_text("\n".join(rows) + "\n")
    return labels


@pytest.fixture(scope="module")
def png_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("pngs")
    write_pngs(root / "imgs")
    out = root / "store"
    r = cli("data", "import", str(root / "imgs"), "--labels", str(root / "labels.csv"), "--out", str(out),
            "--val", "20", "--test", "0.2", "--seed", "3", "--shard-size", "32")
    assert r.returncode == 0, r.stderr
    assert "labels brightness, period" in r.stdout
    return root, out


def test_import_store_is_a_store(png_store):
    root, out = png_store
    m = read_manifest(out)
    assert m["label_names"] == ["brightness", "period"] and m["image_shape"] == [1, 10, 10]
    assert m["pixel_map"] == {"kind": "fixed", "source_dtype": "uint8", "lo": 0.0, "hi": 255.0}
    assert {s: m["splits"][s]["n"] for s in ("train", "val", "test")} == {"train": 76, "val": 20, "test": 24}
    assert verify_store(out) == []
    r = cli("data", "verify", str(out))
    assert r.returncode == 0, r.stderr
    store = open_store(out)
    x, y = store.read("test")
    assert x.shape == (24, 1, 10, 10) and y.shape == (24, 2)
    # every source row is in exactly one split, with its own labels and pixels (int16 round trip)
    import csv

    from PIL import Image
    with open(root / "labels.csv") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    seen = []
    for split in ("train", "val", "test"):
        xs, ys = store.read(split)
        for img, lab in zip(xs, ys, strict=True):
            name = next(f for f, r in rows.items() if abs(float(r["brightness"]) - lab[0]) < 1e-9)
            seen.append(name)
            raw = np.asarray(Image.open(root / "imgs" / name))
            np.testing.assert_allclose(img[0], apply_pixel_map(raw, m["pixel_map"]), atol=2e-5)
            assert abs(float(rows[name]["period"]) - lab[1]) < 1e-9
    assert sorted(seen) == sorted(rows)  # disjoint splits covering every row
    # ranges from the data; the scaler takes the store's own label names
    scaler = LabelScaler.from_manifest(m)
    assert scaler.names == ("brightness", "period")
    z = scaler.scale(y)
    assert z.shape == (24, 2) and z.min() >= 0 and z.max() <= 1
    from moirescale.labels import mean_guess_mse  # the MSE of guessing each label's mean, by its own name

    assert mean_guess_mse(store) == pytest.approx(dict(zip(scaler.names, z.var(0), strict=True)), rel=1e-12)
    r = cli("data", "show", str(out), "--out", str(root / "show.png"))
    assert r.returncode == 0 and (root / "show.png").is_file(), r.stderr


def test_import_reruns_and_resumes_byte_identical(png_store, tmp_path):
    root, out = png_store
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".h5", ".json")}
    copy = tmp_path / "store"
    import_store(root / "imgs", root / "labels.csv", copy, val="20", test="0.2", seed=3, shard_size=32)
    # a killed import: the last shard gone and the manifest not finished; the same command finishes it
    m = json.loads((copy / "manifest.json").read_text())
    last = m["shards"].pop()
    m["complete"] = False
    (copy / "manifest.json").write_text(json.dumps(m))
    (copy / last["file"]).unlink()
    import_store(root / "imgs", root / "labels.csv", copy, val="20", test="0.2", seed=3, shard_size=32)
    after = {p.name: p.read_bytes() for p in copy.iterdir() if p.suffix in (".h5", ".json")}
    assert after == before
    with pytest.raises(UserError, match="different config"):  # another split of the same data: refused
        import_store(root / "imgs", root / "labels.csv", copy, val="10", seed=3, shard_size=32)


def test_folder_of_pngs_end_to_end(png_store, tmp_path):
    """import -> train (labels of its own names) -> fit -> report -> predict -> errors, noise."""
    root, store = png_store
    run = tmp_path / "run"
    for target, n in (("brightness", 24), ("brightness", 48), ("brightness", 76), ("all", 48)):
        r = cli("train", "--data", str(store), "--out", str(run), "--target", target, "--n-train", str(n),
                "--realizations", "2", "--n-layers", "1", "--width", "8", "--max-epochs", "15",
                "--batch-size", "16", "--schedule", "constant", "--no-progress", "--device", "cpu")
        assert r.returncode == 0, r.stderr
    df = read_results(run)
    assert set(df["target"]) == {"brightness", "all"} and (df["status"] == "ok").all()
    per = [json.loads(s) for s in df["test_mse_labels"]]
    assert all(set(p) == ({"brightness"} if t == "brightness" else {"brightness", "period"})
               for p, t in zip(per, df["target"], strict=True))
    assert df["test_mse_theta"].isna().all()  # θ, J, D belong to simulated stores only
    r = cli("train", "--data", str(store), "--out", str(run), "--target", "J", "--n-train", "8",
            "--no-progress")
    assert r.returncode == 2 and "unknown target 'J'; choose one of brightness, period, all" in r.stderr
    r = cli("fit", str(run))
    assert r.returncode == 0, r.stderr
    assert "brightness" in r.stdout
    r = cli("report", str(run))
    assert r.returncode == 0, r.stderr
    html = (run / "report.html").read_text()
    assert "brightness" in html and "theta" not in html.replace("theta_", "")
    r = cli("predict", str(run), str(root / "imgs" / "im007.png"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["prediction"]) == {"brightness", "period"}
    assert all(np.isfinite(v["value"]) for v in out["prediction"].values())
    r = cli("predict", str(run), f"{store}::test:0", "--json")
    assert r.returncode == 0, r.stderr
    truth = open_store(store).read("test", [0])[1][0]
    assert json.loads(r.stdout)["prediction"]["period"]["truth"] == pytest.approx(truth[1])
    r = cli("errors", str(run), "--target", "all", "--n-train", "48", "--bins", "3", "--json")
    assert r.returncode == 0, r.stderr
    where = json.loads(r.stdout)
    assert {b["label"] for b in where["bins"]} == {"brightness", "period"}  # binned by the store's own labels
    gm = np.exp(np.log(df[df["target"] == "all"]["test_mse"]).mean())
    assert where["realizations"] == 2 and where["mse"] == pytest.approx(gm, rel=1e-4)
    # a `train` run records no dataset.json: errors (above) and noise find the store its checkpoints name
    r = cli("noise", str(run), "--n-test", "8", "--levels", "0.1", "--flip", "", "--n-train", "48")
    assert r.returncode == 0, r.stderr


def _refusal_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Each bad source: the CLI arguments (without --out) and a phrase of its one-line message."""
    from PIL import Image

    def folder(name: str, n: int = 4, shapes=None, csv: str | None = None, files=None) -> list[str]:
        d = tmp / name / "imgs"
        d.mkdir(parents=True)
        names = files or [f"a{i}.png" for i in range(n)]
        for i, f in enumerate(names):
            shape = shapes[i] if shapes else (8, 8)
            Image.fromarray(np.full(shape, 10 * i, np.uint8)).save(d / f)
        text = csv if csv is not None else "file,y\n" + "".join(f"{f},{i}\n" for i, f in enumerate(names))
        (tmp / name / "labels.csv").write_text(text)
        return [str(d), "--labels", str(tmp / name / "labels.csv")]

    cases = {
        "missing": (folder("missing", csv="file,y\na0.png,1\na1.png,2\na2.png,3\na3.png,4\nzz.png,5\n"),
                    "missing"),
        "extra": (folder("extra", csv="file,y\na0.png,1\na1.png,2\na2.png,3\n"), "not named in"),
        "shape": (folder("shape", shapes=[(8, 8), (8, 8), (9, 8), (8, 8)]), "differ in shape"),
        "nan": (folder("nan", csv="file,y\na0.png,1\na1.png,nan\na2.png,3\na3.png,4\n"), "NaN"),
        "text": (folder("text", csv="file,y\na0.png,1\na1.png,big\na2.png,3\na3.png,4\n"), "not a number"),
        "duplicate": (folder("dup", csv="file,y\na0.png,1\na0.png,2\na1.png,3\na2.png,4\na3.png,5\n"),
                      "named twice"),
        "constant": (folder("const", csv="file,y,z\na0.png,1,0\na1.png,2,0\na2.png,3,0\na3.png,4,0\n"),
                     "constant"),
    }
    (tmp / "empty" / "imgs").mkdir(parents=True)
    (tmp / "empty" / "labels.csv").write_text("file,y\n")
    cases["empty"] = ([str(tmp / "empty" / "imgs"), "--labels", str(tmp / "empty" / "labels.csv")], "no rows")
    return cases


def test_refusals_one_line_exit_2_nothing_written(tmp_path):
    for name, (args, phrase) in _refusal_cases(tmp_path / "src").items():
        out = tmp_path / f"out-{name}"
        r = cli("data", "import", *args, "--out", str(out))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and phrase in lines[0], (name, r.stderr)
        assert not out.exists(), name
    # an --out that holds something else: refused, left exactly as it was
    ok = _refusal_cases(tmp_path / "ok")["extra"][0]
    Path(ok[0], "x.png").unlink(missing_ok=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    folder = tmp_path / "good" / "imgs"
    write_pngs(folder, n=12)
    r = cli("data", "import", str(folder), "--labels", str(folder.parent / "labels.csv"), "--out", str(other))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not empty" in r.stderr
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_array_sources_and_label_helpers(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(30, 2, 8, 9))
    h5 = tmp_path / "d.h5"
    import h5py
    with h5py.File(h5, "w") as f:
        f["images"] = images
        f["size"] = rng.uniform(0, 1, 30)
        f["phase"] = rng.uniform(0, 1, 30)
    out = import_store(h5, None, tmp_path / "s", val="5", test="5")
    m = read_manifest(out)
    assert m["label_names"] == ["phase", "size"] and m["image_channels"] == ["c0", "c1"]
    assert m["pixel_map"]["kind"] == "minmax" and m["pixel_map"]["lo"] == pytest.approx(images.min())
    assert verify_store(out) == []
    np.save(tmp_path / "x.npy", images[:, 0])
    (tmp_path / "y.csv").write_text("a\n" + "".join(f"{v}\n" for v in range(29)))
    with pytest.raises(UserError, match="29 rows"):
        import_store(tmp_path / "x.npy", tmp_path / "y.csv", tmp_path / "s2")
    assert not (tmp_path / "s2").exists()
    assert target_index("b", ("a", "b")) == [1] and target_index("all", ("a", "b")) == [0, 1]
    with pytest.raises(UserError, match="choose one of a, b, all"):
        target_index("theta", ("a", "b"))
    assert order_targets(["all", "z", "J", "b", "theta"]) == ["theta", "J", "b", "z", "all"]


def test_worked_example_digits(tmp_path):
    """docs/usage.md's worked example, small: scikit-learn's digits (8 x 8, pixel values 0-16), labels the
    image's mean intensity and the digit, imported from one .npz, trained at three N_D, fitted, advised,
    and one image predicted."""
    from sklearn.datasets import load_digits

    from moirescale.analysis.pipeline import advise, analyze_rundir
    from moirescale.results import append_rows
    from moirescale.train import TrainSpec, run_spec
    from moirescale.use.predict import predict

    d = load_digits()
    src = tmp_path / "digits.npz"
    np.savez(src, images=d.images, intensity=d.images.mean(axis=(1, 2)), digit=d.target.astype(float))
    store = import_store(src, None, tmp_path / "store", val="200", test="300", seed=0)
    assert read_manifest(store)["pixel_map"] == {"kind": "minmax", "source_dtype": "float64", "lo": 0.0,
                                                 "hi": 16.0}
    run = tmp_path / "run"
    for n in (100, 300, 1000):
        spec = TrainSpec("fcn", "intensity", n, realizations=(0, 1, 2), model_kw={"n_layers": 2, "width": 32},
                         schedule="constant", max_epochs=40, batch_size=32, channels="gray")
        append_rows(run, run_spec(spec, store, run, device="cpu", progress=False))
    df = read_results(run)
    gm = df.groupby("n_train")["test_mse"].apply(lambda s: float(np.exp(np.log(s).mean())))
    assert (df["status"] == "ok").all() and gm[1000] < gm[100]
    an = analyze_rundir(run)
    fit = next(c for c in an.curves_d if c[0]["target"] == "intensity")[1]
    assert 0.1 < fit.alpha < 3
    adv = advise(an, "intensity", float(gm[1000]) / 2, None)
    assert adv
    preds, inp = predict(run, f"{store}::test:0")
    assert [p.label for p in preds] == ["intensity"] and preds[0].truth is not None
    print(f"\ndigits: gm test MSE {dict(gm.round(5))}, alpha_D {fit.alpha:.3f}, predicted "
          f"{preds[0].value:.3f} ± {preds[0].std:.3f} (truth {preds[0].truth:.3f})")
    shutil.rmtree(run / "checkpoints")
