"""moirescale: neural scaling laws for deep regression on twisted-bilayer CrI3 domain images."""

__version__ = "0.1.0"
