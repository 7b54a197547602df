"""CLI sub-commands of this package (registered by moirescale.cli): ``sweep`` and ``status``."""

from __future__ import annotations

from pathlib import Path

import typer

from moirescale import rundir as rd


def register(app: typer.Typer) -> None:
    """Add this package's commands to the main app."""

    @app.command("sweep")
    def sweep_cmd(
        config: Path = typer.Argument(..., help="experiment config, e.g. configs/demo.yaml"),
        out: Path = typer.Option(
            ..., "--out", help=f"run directory ({rd.RESULTS}, {rd.LOGS}/, {rd.CHECKPOINTS}/)"
        ),
        executor: str = typer.Option("local", "--executor", help="local (process pool) or ray"),
        address: str = typer.Option(None, "--address", help="Ray cluster to join, e.g. HEAD_IP:6379"),
        dry_run: bool = typer.Option(False, "--dry-run", help="list grids, estimate compute, run nothing"),
        workers: int = typer.Option(None, "--workers", help="parallel jobs (default: every core or GPU)"),
        retries: int = typer.Option(2, "--retries", help="retries of a failing job before it is failed"),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (local executor)"),
        force: bool = typer.Option(False, "--force", help="adopt this config in a RUNDIR of another"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
        grid: list[str] = typer.Option(
            None, "--grid",
            help="only this grid of the config, or GRID:TARGET for one of its targets (repeatable; "
            "RUNDIR keeps the whole config)",
        ),
        longest_first: bool = typer.Option(
            False, "--longest-first",
            help="start the jobs by estimated cost, largest first (default: the config's order); on several "
            "workers a sweep with a few long jobs ends sooner",
        ),
    ) -> None:
        """Run (or resume) every training a config declares; finished runs are skipped."""
        from moirescale.sweep.plan import SweepOptions

        options = SweepOptions(executor, address, workers, retries, device, force, tuple(grid or ()),
                               longest_first)
        if dry_run:
            from rich.console import Console

            from moirescale.sweep.runner import preflight
            from moirescale.sweep.status import dry_run_table

            # The same checks as a real run (nothing is written): a dry run accepts what the run accepts.
            loaded, _, plan = preflight(config, out, options)
            rundir = out if rd.config_path(out).is_file() else None
            Console(width=160).print(dry_run_table(loaded, rundir, plan))
            return
        from moirescale.sweep.runner import run_sweep

        run_sweep(config, out, options, progress=progress)

    @app.command("status")
    def status_cmd(
        rundir: Path = typer.Argument(..., help="a sweep's run directory (or a `moirescale train` one)"),
    ) -> None:
        """Done / running / failed / pending runs per grid, throughput and ETA; saved training states."""
        from rich.console import Console

        from moirescale.sweep.status import status_report

        status_report(rundir, Console(width=140))
