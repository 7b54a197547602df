"""CLI: ``moirescale generate`` (make or resume a dataset store) and ``moirescale data verify|show``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from moirescale.errors import UserError

data_app = typer.Typer(
    help="Inspect dataset stores: verify checksums and contents, draw a sample.", no_args_is_help=True
)


def _nonneg(name: str, v: int | None) -> int | None:
    if v is not None and v < 0:
        raise UserError(f"{name} must be >= 0, got {v}")
    return v


def generate_cmd(
    config: Path = typer.Option(..., "--config", help="dataset YAML, e.g. configs/dataset.yaml"),
    out: Path = typer.Option(
        ..., "--out", help="store directory (new, empty, or an unfinished store to resume)"
    ),
    pool: int = typer.Option(
        None, "--pool", "--n-train",
        help="override splits.train, the pool every N_D subset is drawn from (--n-train: its old name)",
    ),
    n_val: int = typer.Option(None, "--n-val", help="override splits.val"),
    n_test: int = typer.Option(None, "--n-test", help="override splits.test"),
    seed: int = typer.Option(None, "--seed", help="override seed"),
    workers: int = typer.Option(None, "--workers", help="simulator workers (default: every core)"),
    backend: str = typer.Option(None, "--backend", help="override backend (auto, numpy, numba, torch, ...)"),
    batch_size: int = typer.Option(None, "--batch-size", help="samples per simulator call (speed only)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Simulate a dataset into a store; rerunning the same command resumes it (byte-identical result)."""
    from moirescale.data.config import load_config
    from moirescale.data.generate import generate

    overrides = {
        "splits.train": _nonneg("--pool", pool),
        "splits.val": _nonneg("--n-val", n_val),
        "splits.test": _nonneg("--n-test", n_test),
        "seed": _nonneg("--seed", seed),
        "backend": backend,
    }
    cfg, runtime = load_config(config, overrides)
    if workers is not None and not 1 <= workers <= 4 * (os.cpu_count() or 1):
        raise UserError(f"--workers must be between 1 and {4 * (os.cpu_count() or 1)} (4 per CPU core) on "
                        f"this machine, got {workers}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    path = generate(
        cfg,
        out,
        batch_size=batch_size or runtime["batch_size"],
        workers=workers or runtime["workers"],
        progress=progress,
    )
    n = cfg.splits
    print(f"store {path}: train {n.train}, val {n.val}, test {n.test} samples")


@data_app.command("verify")
def verify_cmd(store: Path = typer.Argument(..., help="store directory")) -> None:
    """Check every shard's sha256, shapes, dtypes, label ranges and counts. Exit 0 if sound, 1 if not."""
    from moirescale.data.store import verify_store

    problems = verify_store(store)
    if problems:
        for p in problems:
            print(f"FAIL {p}", file=sys.stderr)
        print(f"{store}: {len(problems)} problem(s) found", file=sys.stderr)
        raise typer.Exit(1)
    print(f"{store}: OK")


@data_app.command("show")
def show_cmd(
    store: Path = typer.Argument(..., help="store directory"),
    split: str = typer.Option("test", "--split", help="train, val or test"),
    index: int = typer.Option(0, "--index", help="sample index within the split"),
    out: Path = typer.Option(Path("sample.png"), "--out", help="PNG to write"),
) -> None:
    """Draw one sample (both channels, red +1 / blue -1) with its labels in the title."""
    from moirescale.data.show import plot_sample
    from moirescale.data.store import open_store

    with open_store(store, checksum=False) as s:
        path = plot_sample(s, split, index, out)
    print(path)


@data_app.command("import")
def import_cmd(
    src: Path = typer.Argument(..., help="a folder of images (PNG, TIFF, .npy) or one .npz/.h5/.npy file"),
    labels: Path = typer.Option(
        None, "--labels",
        help="CSV: a 'file' column naming each image (folder source) and one numeric column per label",
    ),
    out: Path = typer.Option(..., "--out", help="store directory (new, empty, or an unfinished import)"),
    val: str = typer.Option(None, "--val", help="validation samples: a count N or a fraction (default 0.1)"),
    test: str = typer.Option(None, "--test", help="test samples: a count N or a fraction (default 0.1)"),
    seed: int = typer.Option(0, "--seed", help="seed of the split into train/val/test"),
    shard_size: int = typer.Option(1024, "--shard-size", help="samples per shard file"),
) -> None:
    """Make a store from your own images and labels (any label names, any image shape)."""
    from moirescale.data.importer import import_store
    from moirescale.data.store import read_manifest

    path = import_store(src, labels, out, val=val, test=test, seed=seed, shard_size=shard_size)
    m = read_manifest(path)
    n = {s: m["splits"][s]["n"] for s in ("train", "val", "test")}
    pm = m["pixel_map"]
    print(f"store {path}: train {n['train']}, val {n['val']}, test {n['test']} samples; "
          f"images {' x '.join(map(str, m['image_shape']))} (C x H x W); "
          f"labels {', '.join(m['label_names'])}; "
          f"pixels [{pm['lo']:g}, {pm['hi']:g}] -> [-1, 1] ({pm['kind']})")


def register(app: typer.Typer) -> None:
    """Add ``generate`` and ``data verify|show`` to the main app."""
    app.command("generate")(generate_cmd)
    app.add_typer(data_app, name="data")
