"""Scaling-law analysis: statistics over realizations, power-law / joint fits with bootstrap
intervals, figures and the HTML report. Reads only the results table (``moirescale.results``).

Names are imported lazily (PEP 562) so that ``moirescale --help`` does not pay for scipy and pandas.
"""

from __future__ import annotations

from moirescale._lazy import lazy_exports

_EXPORTS = {
    "FitSettings": "fits",
    "JointFit": "joint",
    "PowerLawFit": "fits",
    "SizeTrendFit": "trend",
    "fit_alpha_vs_size": "trend",
    "fit_joint": "joint",
    "fit_power_law": "fits",
    "Analysis": "pipeline",
    "advise": "pipeline",
    "analyze": "pipeline",
    "analyze_rundir": "pipeline",
    "format_advice": "pipeline",
    "write_fits": "pipeline",
    "bootstrap_gm": "moirescale.stats",
    "geometric_stats": "moirescale.stats",
    "load_results": "moirescale.stats",
    "point_stats": "moirescale.stats",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("moirescale.analysis", _EXPORTS, globals())
