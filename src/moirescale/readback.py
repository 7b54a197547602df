"""The one way moirescale reads a small file it is given or wrote earlier: bounded, whole, strict (issue 29).

- :func:`read_bounded` reads a regular file of at most ``max_bytes`` (a device such as ``/dev/zero``, a FIFO
  or a huge file is refused before anything is read);
- :func:`load_yaml_mapping` parses a config: bounded in bytes, nesting depth and expanded size (aliases are
  counted as what they expand to), duplicate keys refused, and an empty or non-mapping document refused;
- :func:`read_json` parses a JSON file the tool wrote (no ``NaN``/``Infinity`` constants), bounded in bytes;
- :func:`dumps_strict` writes JSON that every parser reads: a non-finite float becomes ``null``.

Each problem is one :class:`~moirescale.errors.UserError` that names the file.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from moirescale.errors import UserError

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: the largest shipped config is a few kB
MAX_JSON_BYTES = 64 << 20  # a manifest of 100 000 shards is ~30 MB
MAX_DEPTH = 32  # nesting of a config: the schemas need 5
MAX_NODES = 200_000  # scalars + collections, aliases expanded


def read_bounded(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``; UserError if it is missing, not a regular file or too big."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{what} not found: {p}") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{p}: not a regular file (a {what} must be one)")
        if st.st_size > max_bytes:
            raise UserError(f"{p}: {st.st_size} bytes, above the limit of {max_bytes} for a {what}")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise UserError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew while read
        raise UserError(f"{p}: above the limit of {max_bytes} bytes for a {what}")
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (a second ``grids:``)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            dup = key in seen
        except TypeError:  # an unhashable key: the base constructor says so
            break
        if dup:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1}); give each key once", mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _check_shape(root: yaml.Node, where: str) -> None:
    """Refuse a node graph nested deeper than :data:`MAX_DEPTH` or larger than :data:`MAX_NODES` once its
    aliases are expanded (a "billion laughs" document is a few hundred bytes). Iterative: no recursion."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    on_path: set[int] = set()
    while stack:
        node, depth, done = stack.pop()
        if done:
            on_path.discard(id(node))
            kids = _children(node)
            size[id(node)] = min(MAX_NODES + 1, 1 + sum(size[id(k)] for k in kids))
            continue
        if id(node) in size:
            continue
        if depth > MAX_DEPTH:
            raise UserError(f"{where}: nested deeper than {MAX_DEPTH} levels; a config needs a few")
        if id(node) in on_path:
            raise UserError(f"{where}: a YAML alias refers to itself")
        on_path.add(id(node))
        stack.append((node, depth, True))
        stack.extend((k, depth + 1, False) for k in _children(node) if id(k) not in size)
    if size[id(root)] > MAX_NODES:
        raise UserError(f"{where}: more than {MAX_NODES} values once its aliases are expanded")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text safely (bounded depth and size, unique keys); UserError naming ``where``."""
    try:
        loader = _UniqueKeyLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_shape(node, where)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise UserError(f"{where}: not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply") from None


def load_yaml_mapping(path: str | os.PathLike[str], what: str = "config") -> tuple[dict[str, Any], str]:
    """A config file as (mapping, text): bounded, unique keys, and a non-empty mapping at the top."""
    p = Path(path)
    blob = read_bounded(p, MAX_CONFIG_BYTES, what)
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: cannot be read as a text file ({exc})") from None
    data = parse_yaml(text, str(p))
    if data is None or data == {}:
        raise UserError(f"{p}: the {what} is empty; it must be a mapping of settings")
    if not isinstance(data, dict):
        raise UserError(f"{p}: the top level of a {what} must be a mapping (key: value), got "
                        f"{type(data).__name__}")
    return data, text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_json(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON document the tool wrote; UserError naming it when it is missing, too big or not JSON."""
    p = Path(path)
    blob = read_bounded(p, max_bytes, what)
    try:
        return json.loads(blob.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{p} is corrupt or not a {what} ({msg})") from None


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (recursively in dicts, lists and tuples)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps_strict(obj: Any, **kw: Any) -> str:
    """JSON text that every parser reads: NaN and infinities become ``null`` (never a bare ``NaN``)."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kw)
