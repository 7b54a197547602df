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


# The OSErrors that are the machine refusing, not a bug: docs/reliability.md names each. They print one line
# and exit 2; any other OSError (a missing file the code should have checked, EISDIR, EIO...) is a bug or an
# unforeseen case and surfaces as a traceback (exit 1), so tests can tell a refusal from a crash.
REFUSING_ERRNOS = {
    errno.ENOSPC: "a full disk",
    errno.EDQUOT: "a disk quota exceeded",
    errno.EROFS: "a read-only file system",
    errno.EACCES: "no permission",
    errno.EPERM: "an operation not permitted",
    errno.ELOOP: "a link planted where a file is appended to (a lock, a log)",
}
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def main() -> None:
    """Entry point. Usage errors (bad options) exit 2 via typer; a UserError, or one of the OSErrors of
    :data:`REFUSING_ERRNOS` (a full disk, no permission), prints one line and exits 2."""
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in REFUSING_ERRNOS:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        what = exc.strerror or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        hint = ("; free some space, then run the same command again to resume"
                if exc.errno in OUT_OF_SPACE else "")
        print(f"error: {where}{what}{hint}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
