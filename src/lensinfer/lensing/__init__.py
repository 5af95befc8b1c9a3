"""Batched torch lens renderer: lenstronomy-convention profiles, one lens plane, many images at once.

Scenes are written in lenstronomy's vocabulary (model lists + keyword dicts, lenstronomy 1.14.0), so that a
lenstronomy render of the same scene is the reference (tests/test_lensing_*.py, bench/simulate.py).

Modules: :mod:`.epl` (Tessore & Metcalf 2015 series), :mod:`.nfw` (NFW, truncated NFW of Baltz et al. 2009),
:mod:`.shear`, :mod:`.multipole`, :mod:`.light` (Sérsic), :mod:`.profiles` (name → functions), :mod:`.scene`
(struct-of-arrays), :mod:`.kernels` (fused compiled sums), :mod:`.render` (ray shooting, light, PSF) and
:mod:`.sheet` (mean convergence for the negative mass sheet without a κ map).
"""

from .epl import epl_convergence, epl_deflection
from .light import sersic_ellipse
from .multipole import multipole_deflection
from .nfw import nfw_convergence, nfw_deflection, tnfw_convergence, tnfw_deflection
from .profiles import sheet_deflection
from .render import deflection, ray_shoot, render_arrays, render_batch, render_image
from .scene import ProfileGroup, SceneArrays, scene_to_arrays
from .shear import shear_deflection
from .sheet import mean_convergence, mean_convergence_batch

__all__ = [
    "ProfileGroup",
    "SceneArrays",
    "deflection",
    "epl_convergence",
    "epl_deflection",
    "mean_convergence",
    "mean_convergence_batch",
    "multipole_deflection",
    "nfw_convergence",
    "nfw_deflection",
    "ray_shoot",
    "render_arrays",
    "render_batch",
    "render_image",
    "scene_to_arrays",
    "sersic_ellipse",
    "shear_deflection",
    "sheet_deflection",
    "tnfw_convergence",
    "tnfw_deflection",
]
