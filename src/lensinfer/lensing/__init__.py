"""Batched torch lens renderer: lenstronomy-convention profiles, one lens plane, many images at once.

Scenes are written in lenstronomy's vocabulary (model lists + keyword dicts, lenstronomy 1.14.0), so that a
lenstronomy render of the same scene is the reference (tests/test_lensing_*.py, bench/simulate.py).

Modules: :mod:`.epl` (Tessore & Metcalf 2015 series), :mod:`.nfw` (NFW, truncated NFW of Baltz et al. 2009),
:mod:`.shear`, :mod:`.multipole`, :mod:`.light` (Sérsic), :mod:`.profiles` (name → functions), :mod:`.scene`
(struct-of-arrays), :mod:`.kernels` (fused compiled sums), :mod:`.render` (ray shooting, light, PSF),
:mod:`.multiplane` (multi-plane ray tracing for line-of-sight halos), :mod:`.interpol` (pixelised 'INTERPOL' light,
COSMOS sources) and :mod:`.sheet` (mean convergence for the negative mass sheet without a κ map, also used by the
lenstronomy backend). :mod:`lensinfer.simulate.torch_backend` makes this the simulator's ``renderer.backend: torch``.
"""

from .epl import epl_convergence, epl_deflection
from .interpol import interpol_light
from .light import sersic_ellipse
from .multiplane import PlaneSchedule, plane_schedule, ray_shoot_planes
from .multipole import multipole_deflection
from .nfw import nfw_convergence, nfw_deflection, tnfw_convergence, tnfw_deflection
from .profiles import sheet_deflection
from .render import deflection, ray_shoot, render_arrays, render_batch, render_image
from .scene import ProfileGroup, SceneArrays, scene_to_arrays
from .shear import shear_deflection
from .sheet import mean_convergence, mean_convergence_batch, mean_convergence_from_deflections

__all__ = [
    "PlaneSchedule",
    "ProfileGroup",
    "SceneArrays",
    "deflection",
    "epl_convergence",
    "epl_deflection",
    "interpol_light",
    "mean_convergence",
    "mean_convergence_batch",
    "mean_convergence_from_deflections",
    "multipole_deflection",
    "nfw_convergence",
    "nfw_deflection",
    "plane_schedule",
    "ray_shoot",
    "ray_shoot_planes",
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
