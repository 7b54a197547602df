"""Write and read one simulated sample as ``.npz`` (the keys of the sample dict), atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moirescale.errors import UserError
from moirescale.fsio import atomic_open

KEYS = ("spins", "jperp", "image", "theta_eff", "J", "D", "seed", "energy")


def save_npz(sample: dict, path: str | Path) -> Path:
    """Write ``sample`` to ``path`` (temp file + rename, so a failed write never leaves a partial file)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise UserError(f"output file must end in .npz, got {path}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: directory {parent} does not exist")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    arrays = {k: np.asarray(sample[k]) for k in KEYS}
    try:
        with atomic_open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def load_npz(path: str | Path) -> dict:
    """Read a sample written by :func:`save_npz`; scalars come back as Python numbers."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise UserError(f"{path} is not a moirescale sample: missing {', '.join(missing)}")
            out = {k: z[k] for k in KEYS}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read sample {path}: {exc}") from None
    for k in ("theta_eff", "J", "D", "energy"):
        out[k] = float(out[k])
    out["seed"] = int(out["seed"])
    return out
