"""The ``moirescale`` command. Each sub-package registers its own sub-commands (``<package>/commands.py``).

Bad input raises :class:`moirescale.errors.UserError`; it is printed as one line and the exit code is 2.
"""

from __future__ import annotations

import errno
import sys

import typer

from moirescale.errors import UserError

app = typer.Typer(
    name="moirescale",
    help="Neural scaling laws for deep regression: simulate, train, sweep, fit, report, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Neural scaling laws for deep regression: simulate, train, sweep, fit, report, predict."""


@app.command()
def version() -> None:
    """Print the moirescale version."""
    from moirescale import __version__

    print(__version__)


def _register() -> None:
    # Imported here so `moirescale --help` stays fast and each package owns its commands.
    from moirescale.analysis import commands as analysis_commands
    from moirescale.data import commands as data_commands
    from moirescale.physics import commands as physics_commands
    from moirescale.sweep import commands as sweep_commands
    from moirescale.train import commands as train_commands
    from moirescale.use import commands as use_commands

    for mod in (
        physics_commands, data_commands, train_commands, sweep_commands, analysis_commands, use_commands
    ):
        mod.register(app)


_register()


def main() -> None:
    """Entry point. Usage errors (bad options) exit 2 via typer; a UserError, or an OSError of the system
    (a full disk, a permission), prints one line and exits 2."""
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # the machine refused (a full disk, no permission): its one line, not a traceback
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        what = exc.strerror or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        full = exc.errno == errno.ENOSPC
        hint = "; free some space, then run the same command again to resume" if full else ""
        print(f"error: {where}{what}{hint}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
