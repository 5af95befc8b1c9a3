"""Preprocessed observations as arrays: the ``.npy`` images and masks that ``preprocess`` writes per lens."""

from __future__ import annotations

import numpy as np

__all__ = ["load_observations"]


def load_observations(images: list[str], masks: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Stacked observation images (N, [C,] H, W) float32 and masks (N, H, W) bool from ``.npy`` files."""
    x = np.stack([np.load(p).astype(np.float32) for p in images])
    m = np.stack([np.load(p).astype(bool) for p in masks])
    return x, m
