"""Scene rendering with the batched torch renderer :mod:`lensinfer.lensing` (``renderer.backend: torch``).

Implements the renderer protocol of :mod:`lensinfer.simulate.renderers` on the same scenes as
:class:`~lensinfer.simulate.lenstronomy_backend.LenstronomyRenderer` (lenstronomy 1.14.0 vocabulary) and reproduces
its images: lenstronomy's pixel grid (``make_grid``), surface brightness on the s×s-supersampled grid averaged to
pixels, the 'PIXEL' PSF by zero-padded FFT convolution, × pixel area (``ImageModel.image`` with
``supersampling_convolution=False``). Supported models:

* lens: 'EPL' / 'EPL_NUMBA' (Tessore & Metcalf 2015 series), 'NFW', 'TNFW', 'SHEAR', 'MULTIPOLE', 'CONVERGENCE';
  single plane, or multi-plane when the scene has a ``lens_redshift_list`` (line-of-sight halos; lenstronomy
  ``MultiPlane`` with the config cosmology, :mod:`lensinfer.lensing.multiplane`);
* light (source and lens light): 'SERSIC', 'SERSIC_ELLIPSE' and 'INTERPOL' (COSMOS galaxies,
  :mod:`lensinfer.lensing.interpol`).

Anything else raises :class:`NotImplementedError` naming the model; so do scenes carrying point sources.

Precision: float64 on every device, no mixed-precision autocast. float32 was measured and rejected for CUDA (a
one-off run of the tests/test_torch_backend.py configurations in float32 on the CPU, against lenstronomy): Sérsic scenes
stay within 2–8e-3 σ_bkg, but shallow EPL subhalos (γ → 1.01, as the population prior with 10 % scatter draws)
have θ_E far below float32's range (θ_E^(γ−1) ∝ mass, spec §1.2) while their deflection 2b^t/(1+q) is not small,
so θ_E underflows to 0 and pixels were off by up to 1e2 σ_bkg. Quantities that feed later draws (the smooth
image for subhalo placement, the sheet's mean convergence) must be float64 anyway, so that the parameter table
equals the lenstronomy backend's.

Batching: :meth:`TorchRenderer.images` and :meth:`TorchRenderer.smooth_images` render many scenes in one pass
(same values as one at a time up to rounding). ``simulate_shard`` renders one image at a time: at the demo
configuration (config/config.yaml, compiled, one thread) 48 full images took 3.8 ms each in one batch vs 5.8 ms one
at a time, a saving of ~2 ms of the ~15 ms a whole simulated image costs, and at the published configuration the
arithmetic of ~1000 subhalos dominates; bit-equal shards for every batch size would also need batch-independent
padding of the fused sums. So the simulator does not batch.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..lensing.interpol import interpol_light
from ..lensing.multiplane import plane_schedule, ray_shoot_planes
from ..lensing.profiles import LENS_PROFILES, LIGHT_PROFILES
from ..lensing.render import convolve, pixel_grid, ray_shoot, surface_brightness
from ..lensing.scene import scene_to_arrays
from ..lensing.sheet import mean_convergence as _mean_convergence
from .instrument import Instrument
from .scene import MacroDraw, Scene

__all__ = ["COMPILE", "INTERPOL_KEYS", "MAX_BATCH", "TorchRenderer", "check_scene", "resolve_device"]

#: Default of ``TorchRenderer(compile=None)``: fuse the halo sums with ``torch.compile`` (tests switch it off).
COMPILE = True
#: Largest number of images rendered in one pass (bounds memory: a few (B, pixels) float64 arrays per pass).
MAX_BATCH = 64
#: lenstronomy 'INTERPOL' keywords (lenstronomy.LightModel.Profiles.interpolation.Interpol.param_names).
INTERPOL_KEYS = frozenset({"image", "amp", "center_x", "center_y", "phi_G", "scale"})
#: Scene attributes that would carry point sources (not rendered by this backend).
_POINT_SOURCE_FIELDS = ("point_source_model_list", "kwargs_ps", "point_sources", "point_source", "kwargs_point_source")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device of ``renderer.device``: 'auto' → CUDA if available else CPU; 'cuda' must be available."""
    name = "auto" if device is None else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("renderer.device: 'cuda' requested but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device(name)


def _get(scene: Any, name: str) -> Any:
    return scene.get(name) if isinstance(scene, Mapping) else getattr(scene, name, None)


def _source_lists(scene: Any) -> tuple[list[str], list[dict[str, Any]]]:
    models = _get(scene, "source_model_list")
    if models is None:
        models = _get(scene, "source_light_model_list")
    return list(models or []), list(_get(scene, "kwargs_source") or [])


def check_scene(scene: Any) -> None:
    """Raise NotImplementedError for anything the torch backend cannot render (named), ValueError for bad input."""
    for name in _POINT_SOURCE_FIELDS:
        if _get(scene, name):
            raise NotImplementedError(f"torch renderer: point sources ({name!r}) are not implemented")
    lens = list(_get(scene, "lens_model_list") or [])
    for model in lens:
        if model not in LENS_PROFILES:
            raise NotImplementedError(
                f"torch renderer: lens model {model!r} is not implemented (supported: {sorted(LENS_PROFILES)})"
            )
    src_models, src_kwargs = _source_lists(scene)
    light_models = list(_get(scene, "lens_light_model_list") or [])
    light_kwargs = list(_get(scene, "kwargs_lens_light") or [])
    supported = sorted(LIGHT_PROFILES) + ["INTERPOL"]
    for kind, models, kwargs in (("source", src_models, src_kwargs), ("lens light", light_models, light_kwargs)):
        if len(models) != len(kwargs):
            raise ValueError(f"{kind}: {len(models)} models but {len(kwargs)} keyword dicts")
        for model, kw in zip(models, kwargs):
            if model == "INTERPOL":
                unknown = set(kw) - INTERPOL_KEYS
                if unknown or "image" not in kw:
                    raise ValueError(f"{kind} 'INTERPOL': unknown keywords {sorted(unknown)} or no 'image'")
            elif model not in LIGHT_PROFILES:
                raise NotImplementedError(
                    f"torch renderer: {kind} light model {model!r} is not implemented (supported: {supported})"
                )
    redshifts = _get(scene, "lens_redshift_list")
    if redshifts is not None and len(redshifts) != len(lens):
        raise ValueError(f"lens_redshift_list has {len(redshifts)} entries for {len(lens)} lens models")


def _split_interpol(models: list[str], kwargs: list[dict[str, Any]]) -> tuple[list[str], list[dict], list[dict]]:
    """(analytic models, their kwargs, INTERPOL kwargs)."""
    keep = [(m, kw) for m, kw in zip(models, kwargs) if m != "INTERPOL"]
    pixelised = [kw for m, kw in zip(models, kwargs) if m == "INTERPOL"]
    return [m for m, _ in keep], [kw for _, kw in keep], pixelised


class TorchRenderer:
    """Render lenstronomy-vocabulary scenes on the instrument's grid with :mod:`lensinfer.lensing` (torch)."""

    def __init__(
        self,
        instrument: Instrument,
        cosmology: str = "planck18",
        device: str | torch.device | None = "auto",
        *,
        compile: bool | None = None,
    ) -> None:
        from .. import physics

        self.instrument = instrument
        self.cosmology = cosmology
        self._cosmo = physics.get_cosmology(cosmology)
        self.device = resolve_device(device)
        self.compile = COMPILE if compile is None else bool(compile)
        #: working precision of every rendering (see module docstring)
        self.dtype = torch.float64
        self.psf_kernel = instrument.psf()
        self.half_width = instrument.num_pix * instrument.pixel_scale / 2.0
        # fixed per renderer: the (supersampled) pixel grid and the normalised PSF on the working device/dtype
        self._grid = pixel_grid(instrument.num_pix, instrument.pixel_scale, instrument.supersampling,
                                dtype=self.dtype, device=self.device)
        kernel = torch.as_tensor(self.psf_kernel, dtype=self.dtype, device=self.device)
        self._kernel = kernel / kernel.sum()

    # --- protocol -------------------------------------------------------------------------------------------
    def smooth_image(self, macro: MacroDraw) -> np.ndarray:
        """Noiseless, PSF-convolved lensed source without substructure or lens light (subhalo placement map)."""
        return self.smooth_images([macro])[0]

    def image(self, scene: Scene) -> np.ndarray:
        """Noiseless, PSF-convolved image of the full scene (lens light included)."""
        return self.images([scene])[0]

    def mean_convergence(self, models: list[str], kwargs: list[dict[str, float]]) -> float:
        """Mean convergence of the given components over the image field (for the negative mass sheet).

        Gauss's theorem on the field boundary (:func:`lensinfer.lensing.sheet.mean_convergence`, the quadrature
        the lenstronomy backend shares).
        """
        if not models:
            return 0.0
        check_scene({"lens_model_list": models})
        return _mean_convergence(
            {"lens_model_list": list(models), "kwargs_lens": list(kwargs)},
            num_pix=self.instrument.num_pix,
            pixel_scale=self.instrument.pixel_scale,
            device=self.device,
            dtype=self.dtype,
            compile=self.compile,
        )

    # --- batched --------------------------------------------------------------------------------------------
    def smooth_images(self, macros: Sequence[MacroDraw]) -> np.ndarray:
        """:meth:`smooth_image` of many macro models at once, (B, N, N) float64."""
        views = [
            {
                "lens_model_list": list(m.lens_model_list),
                "kwargs_lens": list(m.kwargs_lens),
                "source_model_list": list(m.source_model_list),
                "kwargs_source": list(m.kwargs_source),
            }
            for m in macros
        ]
        return self._render_all(views, self.dtype)

    def images(self, scenes: Sequence[Scene]) -> np.ndarray:
        """:meth:`image` of many scenes at once, (B, N, N) float64."""
        return self._render_all(list(scenes), self.dtype)

    # --- internals ------------------------------------------------------------------------------------------
    def _render_all(self, scenes: list[Any], dtype: torch.dtype) -> np.ndarray:
        n = self.instrument.num_pix
        out = np.empty((len(scenes), n, n), dtype=np.float64)
        for scene in scenes:
            check_scene(scene)
        multi = [i for i, s in enumerate(scenes) if _get(s, "lens_redshift_list") is not None]
        single = [i for i, s in enumerate(scenes) if _get(s, "lens_redshift_list") is None]
        for indices in (single, multi):
            for start in range(0, len(indices), MAX_BATCH):
                part = indices[start : start + MAX_BATCH]
                with torch.no_grad():
                    images = self._render([scenes[i] for i in part], dtype, multi_plane=indices is multi)
                out[part] = images.detach().cpu().numpy().astype(np.float64)
        return out

    def _render(self, scenes: list[Any], dtype: torch.dtype, multi_plane: bool) -> Tensor:
        """Noiseless images (B, N, N) of scenes that are all single-plane or all multi-plane."""
        inst, device = self.instrument, self.device
        batch = len(scenes)
        light_views, src_pix, light_pix = [], [], []
        for s in scenes:
            src_m, src_kw, src_interp = _split_interpol(*_source_lists(s))
            ll_m, ll_kw, ll_interp = _split_interpol(
                list(_get(s, "lens_light_model_list") or []), list(_get(s, "kwargs_lens_light") or [])
            )
            light_views.append(
                {"source_model_list": src_m, "kwargs_source": src_kw, "lens_light_model_list": ll_m,
                 "kwargs_lens_light": ll_kw}
            )
            src_pix.append(src_interp)
            light_pix.append(ll_interp)
        light = scene_to_arrays(light_views, device=device, dtype=dtype)
        x, y = (g.to(dtype) for g in self._grid)
        flux = surface_brightness(light.lens_light, x, y, batch)
        self._add_interpol(flux, light_pix, x.expand(batch, -1), y.expand(batch, -1))
        if light.source_light or any(src_pix):
            if multi_plane:
                bx, by = self._ray_shoot_multi(scenes, x, y, dtype)
            else:
                lens = scene_to_arrays(
                    [{"lens_model_list": _get(s, "lens_model_list") or [], "kwargs_lens": _get(s, "kwargs_lens") or []}
                     for s in scenes],
                    device=device,
                    dtype=dtype,
                )
                bx, by = ray_shoot(lens, x, y, compile=self.compile)
            flux = flux + surface_brightness(light.source_light, bx, by, batch)
            self._add_interpol(flux, src_pix, bx, by)
        n, s = inst.num_pix, inst.supersampling
        image = flux.view(batch, n, s, n, s).mean(dim=(2, 4))
        return convolve(image, self._kernel.to(dtype)) * inst.pixel_scale**2

    def _add_interpol(self, flux: Tensor, per_image: list[list[dict]], x: Tensor, y: Tensor) -> None:
        """Add the 'INTERPOL' components of each image, evaluated at its points x[b], y[b], to flux[b]."""
        for b, comps in enumerate(per_image):
            for kw in comps:
                image = torch.as_tensor(np.asarray(kw["image"], dtype=np.float64), dtype=flux.dtype, device=flux.device)
                flux[b] += interpol_light(
                    x[b], y[b], image, float(kw.get("amp", 1.0)), float(kw.get("center_x", 0.0)),
                    float(kw.get("center_y", 0.0)), float(kw.get("phi_G", 0.0)), float(kw.get("scale", 1.0)),
                )

    def _ray_shoot_multi(self, scenes: list[Any], x: Tensor, y: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Multi-plane ray shooting of a batch (lenstronomy ``MultiPlane`` with z_source = the scene's z_source)."""
        models = [list(_get(s, "lens_model_list") or []) for s in scenes]
        kwargs = [list(_get(s, "kwargs_lens") or []) for s in scenes]
        schedule = plane_schedule([_get(s, "lens_redshift_list") for s in scenes],
                                  [float(_get(s, "z_source")) for s in scenes], self._cosmo)
        planes = []
        for k in range(schedule.n_planes):
            views = []
            for b, members in enumerate(schedule.members):
                idx = members[k] if k < len(members) else []
                views.append({"lens_model_list": [models[b][i] for i in idx],
                              "kwargs_lens": [kwargs[b][i] for i in idx]})
            planes.append(scene_to_arrays(views, device=self.device, dtype=dtype).lens)
        return ray_shoot_planes(planes, schedule, x, y, compile=self.compile)
