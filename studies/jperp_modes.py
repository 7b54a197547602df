"""MODEL.md §6 check 3 and the AFM area against J, in both J_perp modes (docs/model.md §10, issue 15).

    .venv/bin/python studies/jperp_modes.py        # ~1 min on one core; prints a Markdown table

The AFM fraction is the fraction of vertical pairs whose layers point opposite ways after the full MODEL.md
anneal, averaged over 4 seeds.
"""

from __future__ import annotations

import numpy as np

from moirescale.physics import AnnealProtocol, ImageSpec, JperpSpec, simulate_batch

SEEDS = [0, 1, 2, 3]
SMALL = ImageSpec(size_px=8, fov_nm=12.8, channels=("top",))  # the image is not used here


def afm_fraction(theta: float, J: float, D: float, mode: str) -> tuple[float, float]:
    out = simulate_batch([theta] * len(SEEDS), [J] * len(SEEDS), [D] * len(SEEDS), SEEDS, backend="numba",
                         protocol=AnnealProtocol(), jperp=JperpSpec(mode), image=SMALL, workers=1)
    f = np.array([(s["spins"][0, ..., 2] * s["spins"][1, ..., 2] < 0).mean() for s in out])
    return float(f.mean()), float(f.std())


def main() -> None:
    print("| θ (°) | D (meV) | J (meV) | AFM fraction, scale | AFM fraction, shift |")
    print("|---|---|---|---|---|")
    cases = [(1.0, 0.0, J) for J in (0.25, 0.6)] + [(3.0, 0.0, 0.37)]
    cases += [(1.75, D, J) for D in (0.0, 0.6, 0.9) for J in (0.2, 0.4, 0.6, 0.8, 1.0)]
    for theta, D, J in cases:
        a, sa = afm_fraction(theta, J, D, "scale")
        b, sb = afm_fraction(theta, J, D, "shift")
        print(f"| {theta} | {D} | {J} | {a:.3f} ± {sa:.3f} | {b:.3f} ± {sb:.3f} |", flush=True)


if __name__ == "__main__":
    main()
