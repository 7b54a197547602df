"""Moved to tests/synthetic.py; kept for the tests until they are updated (tests/test_hostile.py imports
``moirescale.analysis.synthetic``). Importable only where tests/ is on the path (pytest)."""

from synthetic import *  # noqa: F403 - moved to tests/synthetic.py; kept for the tests until they are updated
