"""Physics of twisted bilayer CrI3 (MODEL.md): lattice, J_perp landscape, Hamiltonian, heat-bath annealing
(numba on the CPU, batched torch on CPU/GPU, numpy reference) and rendering to magnetic-domain images."""

from moirescale.physics.lattice import A_NM, cell_size, moire_period_nm, theta_eff
from moirescale.physics.params import AnnealProtocol, ImageSpec, JperpSpec, ModelParams
from moirescale.physics.simulate import (
    BACKENDS,
    anneal_spins,
    resolve_backend,
    simulate_batch,
    simulate_sample,
)

__all__ = [
    "A_NM",
    "BACKENDS",
    "AnnealProtocol",
    "ImageSpec",
    "JperpSpec",
    "ModelParams",
    "anneal_spins",
    "cell_size",
    "moire_period_nm",
    "resolve_backend",
    "simulate_batch",
    "simulate_sample",
    "theta_eff",
]
