"""Multi-plane ray tracing (line-of-sight halos), batched over images, in lenstronomy 1.14.0's conventions.

The recursion is the standard one for thin lens planes (e.g. Petkova, Metcalf & Giocoli 2014, arXiv 1312.1536;
lenstronomy ``MultiPlaneBase``), written in comoving transverse positions x_k and ray angles a_k, backwards from
the observer: with the planes sorted by redshift z_1 ≤ … ≤ z_K,

    x_0 = 0,  a_0 = θ;   x_k = x_{k−1} + a_{k−1} T(z_{k−1}, z_k),   a_k = a_{k−1} − f_k α̂_k(x_k / T(0, z_k)),
    β = (x_K + a_K T(z_K, z_s)) / T(0, z_s),

where T(z_i, z_j) = (1 + z_j) D_A(z_i, z_j) is the transverse comoving distance (lenstronomy ``Background.T_xy``)
and α̂_k the deflection of the components on plane k as lenstronomy defines them: *reduced* to the source redshift
z_s (``z_source_convention = z_source``), so the physical deflection is f_k α̂_k with f_k = D_A(0, z_s) /
D_A(z_k, z_s). Components at the same redshift form one plane (lenstronomy applies them one after the other with
zero distance in between, which is the same sum). Distances come from the astropy cosmology lenstronomy is given.

Batching: image b has its own planes; step k of the loop treats the k-th plane of every image at once (its
components grouped as in :mod:`.scene`). Images with fewer planes get neutral steps (T = 0, f = 0, no components).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .render import deflection
from .scene import ProfileGroup

__all__ = ["PlaneSchedule", "plane_schedule", "ray_shoot_planes"]


@dataclass(frozen=True)
class PlaneSchedule:
    """Planes of a batch of images and the distances of the recursion (Mpc), padded to K planes.

    ``members[b][k]`` are the indices (into image b's lens model list) of the components on its k-th plane;
    ``delta_t``, ``t_z`` and ``factor`` are (B, K): T(z_{k−1}, z_k) (T(0, z_1) for k = 1), T(0, z_k) and f_k;
    ``t_end`` and ``t_source`` are (B,): T(z_K, z_s) and T(0, z_s).
    """

    redshifts: list[list[float]]
    members: list[list[list[int]]]
    delta_t: np.ndarray
    t_z: np.ndarray
    factor: np.ndarray
    t_end: np.ndarray
    t_source: np.ndarray

    @property
    def n_planes(self) -> int:
        """K, the largest number of planes of an image of the batch."""
        return self.delta_t.shape[1]


#: D_A cache: LOS planes sit on a fixed redshift grid, so most distances repeat across images.
_DISTANCES: dict[tuple[int, float, float], float] = {}
#: the cosmologies of the cache keys, kept alive so that their ids stay unique
_COSMOLOGIES: dict[int, Any] = {}
_MAX_CACHED = 200_000


def _d_a(cosmology: Any, z1: float, z2: float) -> float:
    """Angular diameter distance D_A(z1, z2) in Mpc (astropy, as lenstronomy ``Background.d_xy``; cached)."""
    key = (id(cosmology), z1, z2)
    value = _DISTANCES.get(key)
    if value is None:
        if len(_DISTANCES) > _MAX_CACHED:
            _DISTANCES.clear()
        _COSMOLOGIES[id(cosmology)] = cosmology
        value = _DISTANCES[key] = float(cosmology.angular_diameter_distance(z1, z2).value)
    return value


def _t(cosmology: Any, z1: float, z2: float) -> float:
    """Transverse comoving distance T(z1, z2) = (1 + z2) D_A(z1, z2) (lenstronomy ``Background.T_xy``)."""
    return _d_a(cosmology, z1, z2) * (1.0 + z2)


def plane_schedule(
    redshift_lists: Sequence[Sequence[float]], z_sources: Sequence[float], cosmology: Any
) -> PlaneSchedule:
    """Group each image's components into planes (ascending redshift) and compute the recursion's distances.

    ``redshift_lists[b]`` is lenstronomy's ``lens_redshift_list`` of image b (one redshift per component);
    ``cosmology`` an astropy cosmology (hashable).
    """
    if len(redshift_lists) != len(z_sources):
        raise ValueError(f"{len(redshift_lists)} redshift lists but {len(z_sources)} source redshifts")
    all_z, all_members = [], []
    for zs, z_source in zip(redshift_lists, z_sources):
        zs = [float(z) for z in zs]
        if zs and max(zs) >= z_source:
            raise ValueError(f"lens redshift {max(zs)} >= source redshift {z_source}")
        planes = sorted(set(zs))
        all_z.append(planes)
        all_members.append([[i for i, z in enumerate(zs) if z == zp] for zp in planes])
    n_img, n_planes = len(all_z), max((len(p) for p in all_z), default=0)
    delta_t = np.zeros((n_img, n_planes))
    t_z = np.ones((n_img, n_planes))
    factor = np.zeros((n_img, n_planes))
    t_end = np.zeros(n_img)
    t_source = np.zeros(n_img)
    for b, (planes, z_source) in enumerate(zip(all_z, z_sources)):
        z_source = float(z_source)
        d_source = _d_a(cosmology, 0.0, z_source)
        previous = 0.0
        for k, z in enumerate(planes):
            delta_t[b, k] = _t(cosmology, previous, z)
            t_z[b, k] = _t(cosmology, 0.0, z)
            factor[b, k] = d_source / _d_a(cosmology, z, z_source)
            previous = z
        t_end[b] = _t(cosmology, previous, z_source)
        t_source[b] = _t(cosmology, 0.0, z_source)
    return PlaneSchedule(all_z, all_members, delta_t, t_z, factor, t_end, t_source)


def ray_shoot_planes(
    planes: Sequence[Mapping[str, ProfileGroup]],
    schedule: PlaneSchedule,
    x: Tensor,
    y: Tensor,
    *,
    compile: bool = True,
) -> tuple[Tensor, Tensor]:
    """Source-plane positions (B, P) of image-plane points x, y (P,) through the planes of ``schedule``.

    ``planes[k]`` holds the profile groups of the k-th plane of every image (batch size B, see
    :func:`lensinfer.lensing.scene.scene_to_arrays`).
    """
    if len(planes) != schedule.n_planes:
        raise ValueError(f"{len(planes)} plane groups for a schedule of {schedule.n_planes} planes")
    batch = schedule.delta_t.shape[0]
    as_t = lambda a: torch.as_tensor(a, dtype=x.dtype, device=x.device)  # noqa: E731
    delta_t, t_z, factor = as_t(schedule.delta_t), as_t(schedule.t_z), as_t(schedule.factor)
    px = torch.zeros((batch, x.numel()), dtype=x.dtype, device=x.device)
    py = torch.zeros_like(px)
    ax = x.reshape(1, -1).expand(batch, -1)
    ay = y.reshape(1, -1).expand(batch, -1)
    for k, lens in enumerate(planes):
        px = px + ax * delta_t[:, k : k + 1]
        py = py + ay * delta_t[:, k : k + 1]
        dx, dy = deflection(lens, px / t_z[:, k : k + 1], py / t_z[:, k : k + 1], batch, compile=compile)
        ax = ax - factor[:, k : k + 1] * dx
        ay = ay - factor[:, k : k + 1] * dy
    px = px + ax * as_t(schedule.t_end).unsqueeze(1)
    py = py + ay * as_t(schedule.t_end).unsqueeze(1)
    t_source = as_t(schedule.t_source).unsqueeze(1)
    return px / t_source, py / t_source
