"""CLI sub-commands of this package (registered by moirescale.cli): ``moirescale simulate``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the main app."""

    @app.command("simulate")
    def simulate(
        theta: float = typer.Option(..., "--theta", help="twist angle in degrees, (0.1, 10)"),
        J: float = typer.Option(..., "--J", help="depth of the most AFM interlayer coupling (meV), >= 0"),
        D: float = typer.Option(..., "--D", help="Dzyaloshinskii-Moriya interaction (meV), >= 0"),
        seed: int = typer.Option(0, "--seed", help="sample seed (start state, heat bath, image origin)"),
        out: Path = typer.Option(..., "--out", help="output .npz (spins, jperp, image, labels, energy)"),
        png: Path | None = typer.Option(None, "--png", help="also write a PNG of both layers"),
        backend: str = typer.Option("auto", "--backend", help="auto | numba | torch | numpy"),
        cells_per_side: int = typer.Option(1, "--cells-per-side", help="moire cells per side of the cell"),
    ) -> None:
        """Simulate one twisted-bilayer CrI3 sample (MODEL.md) and write it as .npz (and optionally a PNG)."""
        from moirescale.errors import UserError
        from moirescale.limits import check_cell_side
        from moirescale.physics.io import save_npz
        from moirescale.physics.lattice import THETA_MAX_DEG, THETA_MIN_DEG, cell_size
        from moirescale.physics.render import figure_format, save_png
        from moirescale.physics.simulate import simulate_sample

        if not THETA_MIN_DEG < theta < THETA_MAX_DEG:
            raise UserError(f"--theta must be in ({THETA_MIN_DEG}, {THETA_MAX_DEG}) degrees, got {theta}")
        check_cell_side(cell_size(theta, cells_per_side)[0])
        # Check the outputs can be written before spending time on the simulation.
        for p in [out] + ([png] if png is not None else []):
            parent = p.parent if str(p.parent) else Path(".")
            if not parent.is_dir():
                raise UserError(f"cannot write {p}: directory {parent} does not exist")
        if out.suffix != ".npz":
            raise UserError(f"--out must end in .npz, got {out}")
        if out.is_dir():
            raise UserError(f"--out {out} is a directory; give a .npz file name")
        if png is not None:
            figure_format(png)
        sample = simulate_sample(theta, J, D, seed, backend=backend, cells_per_side=cells_per_side)
        save_npz(sample, out)
        if png is not None:
            save_png(sample, png)
        typer.echo(
            f"wrote {out}: theta_eff={sample['theta_eff']:.4f} deg, J={J} meV, D={D} meV, seed={seed}, "
            f"energy={sample['energy']:.3f} meV"
        )
