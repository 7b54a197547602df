"""Scaling-law analysis: statistics over realizations, power-law / joint fits with bootstrap
intervals, figures and the HTML report. Reads only the results table (``moirescale.results``)."""

from moirescale.analysis.fits import (
    FitSettings,
    JointFit,
    PowerLawFit,
    SizeTrendFit,
    fit_alpha_vs_size,
    fit_joint,
    fit_power_law,
)
from moirescale.analysis.pipeline import Analysis, advise, analyze, analyze_rundir, format_advice, write_fits
from moirescale.analysis.stats import bootstrap_gm, geometric_stats, load_results, point_stats

__all__ = [
    "Analysis",
    "FitSettings",
    "JointFit",
    "PowerLawFit",
    "SizeTrendFit",
    "advise",
    "analyze",
    "analyze_rundir",
    "bootstrap_gm",
    "fit_alpha_vs_size",
    "fit_joint",
    "fit_power_law",
    "format_advice",
    "geometric_stats",
    "load_results",
    "point_stats",
    "write_fits",
]
