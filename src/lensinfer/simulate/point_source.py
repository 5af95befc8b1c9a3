"""An optional lensed point source (quasar-like) at the centre of the source galaxy (``lens.point_source``).

The unlensed point source sits at the source-galaxy centre (lenstronomy ``SOURCE_POSITION`` semantics: ``ra_source``,
``dec_source``, ``source_amp``). Its images are found once per scene with lenstronomy's
``LensEquationSolver.image_position_from_source`` on the full lens model (macro model + subhalos + sheets, multi-plane
with line-of-sight halos), and their signed magnifications with ``LensModel.magnification``; the scene then carries
them as ``LENSED_POSITION`` images (``ra_image``, ``dec_image``, ``point_amp = |μ|·source_amp``), exactly what
lenstronomy's ``PointSource(['SOURCE_POSITION'])`` computes internally, but solved once for all bands and with the
number of images known to the parameter table. Rendering (band PSF, pixel interpolation) is the renderer's job
(:meth:`lensinfer.simulate.lenstronomy_backend.LenstronomyRenderer.image`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .. import physics
from .priors import draw
from .scene import Scene

__all__ = ["lens_model_of", "solve_point_source", "attach_point_source", "point_source_kwargs"]


def lens_model_of(scene: Scene, cosmology: str = "planck18") -> Any:
    """lenstronomy ``LensModel`` of a scene (multi-plane when it has line-of-sight redshifts)."""
    from lenstronomy.LensModel.lens_model import LensModel

    if scene.lens_redshift_list is None:
        return LensModel(scene.lens_model_list)
    return LensModel(scene.lens_model_list, z_source=scene.z_source, lens_redshift_list=scene.lens_redshift_list,
                     multi_plane=True, cosmo=physics.get_cosmology(cosmology))


def solve_point_source(scene: Scene, x_source: float, y_source: float, *, search_window: float, min_distance: float,
                       cosmology: str = "planck18") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, μ) of the images of a point source at (x_source, y_source) inside a square ``search_window``.

    lenstronomy ``LensEquationSolver.image_position_from_source`` (grid search + root polishing to 1e-10″);
    images closer than ``min_distance`` are merged by the solver.
    """
    from lenstronomy.LensModel.Solver.lens_equation_solver import LensEquationSolver

    lens_model = lens_model_of(scene, cosmology)
    solver = LensEquationSolver(lens_model)
    x, y = solver.image_position_from_source(
        x_source, y_source, scene.kwargs_lens, min_distance=min_distance, search_window=search_window,
        precision_limit=1e-10, num_iter_max=100,
    )
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    mu = np.asarray(lens_model.magnification(x, y, scene.kwargs_lens), dtype=float) if x.size else np.zeros(0)
    return x, y, np.atleast_1d(mu)


def attach_point_source(rng: np.random.Generator, scene: Scene, ps_cfg: Mapping[str, Any], *, zero_point: float,
                        num_pix: int, pixel_scale: float, cosmology: str = "planck18") -> None:
    """Draw the point-source magnitude (one draw from ``rng``), solve the lens equation and attach the images.

    The point source sits at ``source_center_x/y`` of the scene's parameter table (Sérsic or COSMOS source).
    Adds the table columns ``ps_magnitude`` (reference band), ``ps_amp`` (unlensed e⁻/s), ``ps_n_images`` and
    ``ps_magnification_total`` (Σ|μ_i|).
    """
    p = scene.params
    p["ps_magnitude"] = float(draw(ps_cfg["magnitude"], rng))
    amp = float(physics.magnitude_to_cps(p["ps_magnitude"], zero_point))
    xs, ys = float(p["source_center_x"]), float(p["source_center_y"])
    x, y, mu = solve_point_source(scene, xs, ys, search_window=num_pix * pixel_scale, min_distance=pixel_scale,
                                  cosmology=cosmology)
    half = num_pix * pixel_scale / 2.0
    inside = (np.abs(x) <= half) & (np.abs(y) <= half)
    x, y, mu = x[inside], y[inside], mu[inside]
    p["ps_amp"] = amp
    p["ps_n_images"] = float(x.size)
    p["ps_magnification_total"] = float(np.abs(mu).sum())
    scene.point_source = {"ra_image": x, "dec_image": y, "magnification": mu, "source_amp": amp,
                          "ra_source": xs, "dec_source": ys}


def point_source_kwargs(point_source: Mapping[str, Any]) -> list[dict[str, Any]]:
    """lenstronomy ``kwargs_ps`` of a ``LENSED_POSITION`` point source: point_amp = |μ_i|·source_amp."""
    return [{"ra_image": np.asarray(point_source["ra_image"], dtype=float),
             "dec_image": np.asarray(point_source["dec_image"], dtype=float),
             "point_amp": np.abs(np.asarray(point_source["magnification"], dtype=float)) * float(point_source["source_amp"])}]
