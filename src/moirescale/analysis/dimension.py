"""Moved to :mod:`moirescale.data.dimension` (beside the store it reads)."""

# moved to moirescale.data.dimension; kept for the tests until they are updated
from moirescale.data.dimension import estimate_dimension  # noqa: F401
