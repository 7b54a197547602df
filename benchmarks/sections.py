"""The one writer of docs/benchmarks.md: each benchmark owns a section between ``<!-- BEGIN name -->`` and
``<!-- END name -->`` and replaces only that, through moirescale's atomic writer (a kill never tears it).
"""

from __future__ import annotations

import re
from pathlib import Path

from moirescale.fsio import atomic_write

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(lines: list[str] | str, name: str, doc: Path = DOC) -> None:
    """Replace section ``name`` of ``doc`` with ``lines`` (appended at the end when it is new)."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    old = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pat = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    new = pat.sub(lambda _: block, old) if pat.search(old) else old.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(doc, new)
