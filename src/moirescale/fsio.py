"""The one way moirescale writes a file: atomically, through a fresh temporary name, never through a link.

Every file the package writes (stores, manifests, results parts, checkpoints, fits, figures, reports, samples,
heartbeats, logs) goes through this module (issue 11):

- :func:`atomic_write` for bytes or text already in memory;
- :func:`atomic_path` for writers that want a path (``savefig``, ``torch.save``, ``h5py.File``,
  ``to_parquet``);
- :func:`open_nofollow` for the few files that are appended to or held open (locks, logs).

The temporary file is created by :func:`tempfile.mkstemp` (``O_CREAT | O_EXCL`` under a random name) in the
target's own directory, so a link planted at a predictable name is never opened, and the final
:func:`os.replace` replaces a link at the target itself rather than the file it points to. The data are
fsync'ed before the rename and the directory after it, so a crash leaves either the old file or the new one,
never a torn one. A failed write removes its temporary file. Temporary names start with :data:`TMP_PREFIX`;
readers ignore them and :func:`remove_stale_temps` clears those a killed process left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files are published with the mode an ordinary open(path, "w") would give (mkstemp makes them 0600).
_FILE_MODE = 0o666 & ~_umask()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename in directory ``path`` durable (a no-op where a directory cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_target(path: Path) -> None:
    # A directory at the target would make os.replace fail late, after the work is done; say so up front.
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(21, "Is a directory", str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; publish it at ``path`` when the block exits cleanly.

    The temporary file exists (empty, created exclusively) when the block starts and keeps the target's
    suffix, so writers that infer a format from the name (``savefig``) still work. On a clean exit it is
    fsync'ed and renamed over ``path``; on an exception it is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : the final file; its directory must exist.

    Examples
    --------
    >>> with atomic_path(folder / "abc.pt") as tmp:  # doctest: +SKIP
    ...     torch.save(state, tmp)
    """
    path = Path(path)
    _check_target(path)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=path.suffix, dir=parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and not exc.filename:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # say which file (a full disk)
        raise
    fsync_dir(parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a fresh temporary file next to ``path`` for writing; publish it at ``path`` on a clean exit.

    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a new file: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as fh:
        yield fh
        fh.flush()


def atomic_write(path: str | os.PathLike[str], data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` (bytes, or text encoded with ``encoding``) to ``path`` atomically; return ``path``."""
    blob = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_open(path, "wb") as fh:
        fh.write(blob)
    return Path(path)


def open_nofollow(path: str | os.PathLike[str], mode: str = "a") -> IO:
    """Open ``path`` for appending (``"a"``, ``"a+"``) without following a link at it; create it if missing.

    For files that cannot be written atomically because they are held open or grow (lock files, logs).
    Raises ``OSError`` (``ELOOP``) when ``path`` is a symbolic link, and when it is not a regular file.
    """
    if mode not in ("a", "a+"):
        raise ValueError(f"open_nofollow appends: mode must be 'a' or 'a+', got {mode!r}")
    flags = os.O_CREAT | os.O_APPEND | (os.O_RDWR if mode == "a+" else os.O_WRONLY)
    fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.fdopen(fd, mode, encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def is_empty(folder: str | os.PathLike[str], allowed: Collection[str] = ()) -> bool:
    """Whether ``folder`` holds no entry at all, dotfiles included, except names in ``allowed``."""
    with os.scandir(folder) as it:
        return all(e.name in allowed for e in it)


# mkstemp's random part: 8 characters of this alphabet (tempfile._RandomNameSequence).
_TMP_NAME = re.compile(rf"^{re.escape(TMP_PREFIX)}(?P<final>.+)\.[a-z0-9_]{{8}}(?P<suffix>\.[^./]*)?$")


def temp_target(name: str) -> str | None:
    """The final name a temporary file of :func:`atomic_path` was made for, or None if ``name`` is not one."""
    m = _TMP_NAME.match(name)
    if m is None or (m["suffix"] or "") != Path(m["final"]).suffix:
        return None
    return m["final"]


def remove_stale_temps(
    folder: str | os.PathLike[str], finals: Callable[[str], bool], older_than_s: float = 3600.0
) -> int:
    """Delete this module's temporary files in ``folder`` that a killed writer left; return how many.

    Only a file named exactly as :func:`atomic_path` names the temporary of a final name that ``finals``
    accepts (``.tmp-<final>.<8 random characters><suffix>``) is touched; any other name, a user's
    ``.tmp-notes`` included, is left alone. ``folder`` must be a real directory (a link there is never
    entered), a link is removed rather than followed, and the age guard keeps a concurrent writer's fresh
    temporary file alive.
    """
    folder = Path(folder)
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return 0
    except OSError:
        return 0
    now = time.time()
    n = 0
    for p in folder.iterdir():
        final = temp_target(p.name)
        if final is None or not finals(final):
            continue
        with contextlib.suppress(OSError):
            st = p.lstat()
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)) or now - st.st_mtime < older_than_s:
                continue
            p.unlink()
            n += 1
    return n


def real_dir(root: str | os.PathLike[str], *parts: str, create: bool = True) -> Path:
    """``root/parts...`` after checking that no component below ``root`` is a link (issue 29).

    Each component is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's descriptor (and made
    with ``mkdirat`` when missing and ``create``), so a link planted anywhere inside a run directory or store
    (``RUNDIR/logs -> ~``) is refused instead of written through. ``root`` itself may be reached through
    links: it is what the user named.

    Raises
    ------
    UserError : a component is a link or not a directory (or is missing and ``create`` is False).
    """
    from moirescale.errors import UserError

    root = Path(root)
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, flags)
    try:
        here = root
        for part in parts:
            here = here / part
            if part in ("", ".", "..") or "/" in part:
                raise ValueError(f"real_dir takes plain names, got {part!r}")
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
            try:
                nxt = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UserError(
                        f"{here} is a link or not a directory; moirescale writes only into real directories "
                        "inside a run directory or store (move it away)"
                    ) from None
                raise OSError(exc.errno, exc.strerror, str(here)) from None
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    return here
