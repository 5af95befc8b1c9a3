"""Scenes in lenstronomy's vocabulary → struct-of-arrays tensors, grouped by profile and padded over a batch.

A *scene* is anything with lenstronomy's keyword layout (a mapping or an object with these attributes):
``lens_model_list`` / ``kwargs_lens``, ``source_light_model_list`` (or ``source_model_list``) / ``kwargs_source``
and ``lens_light_model_list`` / ``kwargs_lens_light``. Missing light entries mean "no light of that kind".

:func:`scene_to_arrays` groups the components of every scene by canonical profile (all EPL subhalos of all
images become one (B, K) tensor per keyword, padded with neutral values and a validity mask), so that the
renderer's work per subhalo is tensor arithmetic and the Python cost per subhalo is one dictionary read per
keyword. The arrays describe one lens plane; a multi-plane extension adds one such group mapping per plane
plus the plane redshifts, and the ray shooting iterates over planes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .profiles import LENS_PROFILES, LIGHT_PROFILES, Profile

__all__ = ["ProfileGroup", "SceneArrays", "scene_to_arrays"]

Scene = Any  # a mapping or an object with lenstronomy's list/keyword attributes (see module docstring)

_CHUNK_STEP = 16


@dataclass(frozen=True)
class ProfileGroup:
    """All components of one profile over a batch: keyword tensors of shape (B, K) and a validity mask (B, K)."""

    profile: Profile
    params: dict[str, Tensor]
    mask: Tensor

    @property
    def count(self) -> Tensor:
        """Number of valid components per image, shape (B,)."""
        return self.mask.sum(dim=1)

    def chunks(self, max_chunk: int) -> tuple[dict[str, Tensor], Tensor]:
        """Repack the valid components into blocks (C, 1, W) of one image each, plus each block's image index (C,).

        W = min(max_chunk, largest count) rounded up to a multiple of 16; images without components get no block.
        Free slots hold the profile's neutral padding.
        """
        counts = self.count
        width = _CHUNK_STEP * math.ceil(min(max_chunk, max(int(counts.max()), 1)) / _CHUNK_STEP)
        per_image = torch.div(counts + width - 1, width, rounding_mode="floor")
        owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), per_image)
        first = torch.cumsum(per_image, 0) - per_image
        b, k = self.mask.nonzero(as_tuple=True)
        row = first[b] + torch.div(k, width, rounding_mode="floor")
        col = k % width
        blocks = {}
        for name, value in self.params.items():
            block = torch.full((len(owner), width), self.profile.padding[name], dtype=value.dtype, device=value.device)
            block[row, col] = value[b, k]
            blocks[name] = block.unsqueeze(1)
        return blocks, owner


@dataclass(frozen=True)
class SceneArrays:
    """A batch of B scenes as profile groups: one lens plane, the source light and the lens light."""

    batch_size: int
    lens: dict[str, ProfileGroup]
    source_light: dict[str, ProfileGroup]
    lens_light: dict[str, ProfileGroup]
    dtype: torch.dtype
    device: torch.device


def _field(scene: Scene, *names: str) -> list:
    for name in names:
        value = scene.get(name) if isinstance(scene, Mapping) else getattr(scene, name, None)
        if value is not None:
            return list(value)
    return []


def _group_components(
    scenes: Sequence[Scene], list_keys: tuple[str, ...], kwargs_key: str, vocabulary: Mapping[str, Profile]
) -> dict[str, tuple[Profile, list[list[Mapping[str, float]]]]]:
    """Per canonical profile: the profile and, per scene, the list of that profile's keyword dicts (defaults filled)."""
    grouped: dict[str, tuple[Profile, list[list[Mapping[str, float]]]]] = {}
    allowed = {name: frozenset(p.params) | frozenset(p.ignored) for name, p in vocabulary.items()}
    for b, scene in enumerate(scenes):
        models = _field(scene, *list_keys)
        kwargs = _field(scene, kwargs_key)
        if len(models) != len(kwargs):
            raise ValueError(
                f"scene {b}: {len(models)} models in {list_keys[0]} but {len(kwargs)} entries in {kwargs_key}"
            )
        for model, kw in zip(models, kwargs):
            profile = vocabulary.get(model)
            if profile is None:
                raise NotImplementedError(f"profile {model!r} is not implemented (known: {sorted(vocabulary)})")
            if profile.name not in grouped:
                grouped[profile.name] = (profile, [[] for _ in scenes])
            if not kw.keys() <= allowed[model]:
                raise ValueError(f"scene {b}: unknown keywords {sorted(kw.keys() - allowed[model])} for {model!r}")
            grouped[profile.name][1][b].append(kw if kw.keys() >= profile.defaults.keys() else {**profile.defaults, **kw})
    return grouped


def _to_groups(
    grouped: Mapping[str, tuple[Profile, list[list[Mapping[str, float]]]]], dtype: torch.dtype, device: torch.device
) -> dict[str, ProfileGroup]:
    out = {}
    for name, (profile, per_scene) in grouped.items():
        width = max(len(c) for c in per_scene)
        mask = np.zeros((len(per_scene), width), dtype=bool)
        params = {}
        for key in profile.params:
            values = np.full((len(per_scene), width), profile.padding[key], dtype=np.float64)
            for b, comps in enumerate(per_scene):
                try:
                    values[b, : len(comps)] = [c[key] for c in comps]
                except KeyError as err:
                    raise ValueError(f"scene {b}: {name} component without keyword {err}") from None
            params[key] = torch.as_tensor(values, dtype=dtype, device=device)
        for b, comps in enumerate(per_scene):
            mask[b, : len(comps)] = True
        out[name] = ProfileGroup(profile=profile, params=params, mask=torch.as_tensor(mask, device=device))
    return out


def scene_to_arrays(
    scenes: Scene | Sequence[Scene], *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> SceneArrays:
    """Group one scene or a batch of scenes into :class:`SceneArrays` (CPU float64 unless told otherwise)."""
    if isinstance(scenes, Mapping) or hasattr(scenes, "lens_model_list"):
        scenes = [scenes]
    scenes = list(scenes)
    if not scenes:
        raise ValueError("no scenes")
    device = torch.device(device or "cpu")
    dtype = dtype or torch.float64
    lens = _group_components(scenes, ("lens_model_list",), "kwargs_lens", LENS_PROFILES)
    source = _group_components(
        scenes, ("source_light_model_list", "source_model_list"), "kwargs_source", LIGHT_PROFILES
    )
    light = _group_components(scenes, ("lens_light_model_list",), "kwargs_lens_light", LIGHT_PROFILES)
    return SceneArrays(
        batch_size=len(scenes),
        lens=_to_groups(lens, dtype, device),
        source_light=_to_groups(source, dtype, device),
        lens_light=_to_groups(light, dtype, device),
        dtype=dtype,
        device=device,
    )
