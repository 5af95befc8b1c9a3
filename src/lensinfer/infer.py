"""γ-grid log-ratio curves, their combination over lenses, MLEs and interpolated intervals (spec/science.md §4).

With late fusion the estimator's θ enters after pooling, so each image is embedded once and only the small head
runs on the grid (:meth:`lensinfer.models.ratio.RatioEstimator.log_ratio_grid`: one ResNet pass plus 150 cheap head
evaluations instead of 150 ResNet passes per image; ``bench/infer.py`` measures the difference). FiLM-conditioned
estimators fall back to one pass per grid point. Curves are normalised to a maximum of 0; the
combined curve of N lenses is the sum of their curves (independent lenses, flat prior on the grid range).
Intervals are {θ : −2Δlog r̂(θ) ≤ t}, with the crossings located by linear interpolation between grid points
(the reference took the nearest grid point) and flagged when they hit the grid edge.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from scipy.stats import chi2

from .data.loader import Whitening
from .models.ratio import RatioEstimator

__all__ = [
    "grid_centres",
    "log_ratio_curves",
    "normalise",
    "combine",
    "mle",
    "Interval",
    "interval",
    "wilks_threshold",
    "summarise_curve",
    "summarise_observations",
    "load_observations",
    "dataset_curves",
    "infer_observations",
    "infer_simulated_sets",
]


def grid_centres(low: float, high: float, n: int) -> np.ndarray:
    """Centres of ``n`` equal bins on [low, high] (reference: 150 centres of linspace(1.1, 2.9, 151))."""
    edges = np.linspace(low, high, n + 1)
    return 0.5 * (edges[1:] + edges[:-1])


@torch.inference_mode()
def log_ratio_curves(model: RatioEstimator, whitening: Whitening, images: np.ndarray, masks: np.ndarray,
                     grid: np.ndarray, batch_size: int = 64, device: str | torch.device = "cpu") -> np.ndarray:
    """Unnormalised log r̂(x_i | θ_g) for images (B, [C,] H, W) on the grid (G,) → (B, G); embed once, head × G."""
    model.eval()
    theta = torch.as_tensor(whitening.theta(np.asarray(grid, dtype=np.float64)), dtype=torch.float32, device=device)
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(whitening.images(images[i:i + batch_size], masks[i:i + batch_size])).to(device)
        out.append(model.log_ratio_grid(x, theta).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(grid)))


def normalise(curves: np.ndarray) -> np.ndarray:
    """Subtract each curve's maximum (reference ``get_logrs``)."""
    return curves - curves.max(axis=-1, keepdims=True)


def combine(curves: np.ndarray) -> np.ndarray:
    """Combined normalised curve of independent lenses: Σ_i log r̂(x_i|θ), renormalised."""
    return normalise(normalise(curves).sum(axis=0))


def mle(grid: np.ndarray, curve: np.ndarray) -> float:
    """Maximum of the curve, refined by the parabola through the best grid point and its neighbours."""
    k = int(np.argmax(curve))
    if k == 0 or k == len(grid) - 1:
        return float(grid[k])
    y0, y1, y2 = curve[k - 1], curve[k], curve[k + 1]
    denom = y0 - 2 * y1 + y2
    if denom >= 0:
        return float(grid[k])
    shift = 0.5 * (y0 - y2) / denom
    return float(grid[k] + np.clip(shift, -0.5, 0.5) * (grid[1] - grid[0]))


@dataclass(frozen=True)
class Interval:
    """A confidence interval; ``*_open`` is True where it runs into the grid edge (the prior bound)."""

    low: float
    high: float
    low_open: bool
    high_open: bool

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def interval(grid: np.ndarray, curve: np.ndarray, threshold: float) -> Interval:
    """{θ : −2(log r̂(θ) − max) ≤ threshold}, the connected part around the maximum, linearly interpolated."""
    stat = -2.0 * (curve - curve.max())
    k = int(np.argmax(curve))
    lo_open = hi_open = False
    j = k
    while j > 0 and stat[j - 1] <= threshold:
        j -= 1
    if j == 0:
        low, lo_open = float(grid[0]), True
    else:
        f = (threshold - stat[j]) / (stat[j - 1] - stat[j])
        low = float(grid[j] + f * (grid[j - 1] - grid[j]))
    j = k
    while j < len(grid) - 1 and stat[j + 1] <= threshold:
        j += 1
    if j == len(grid) - 1:
        high, hi_open = float(grid[-1]), True
    else:
        f = (threshold - stat[j]) / (stat[j + 1] - stat[j])
        high = float(grid[j] + f * (grid[j + 1] - grid[j]))
    return Interval(low, high, lo_open, hi_open)


def wilks_threshold(level: float) -> float:
    """Nominal threshold χ²₁ isf(1 − level): 1.0 for 68.27 %, 3.84 for 95 %."""
    return float(chi2.isf(1.0 - level, df=1))


def summarise_curve(grid: np.ndarray, curve: np.ndarray, levels: Iterable[float],
                    thresholds: dict[str, float] | None = None) -> dict:
    """MLE and, for every level, the Wilks interval and (if given) the coverage-recalibrated interval."""
    out: dict = {"mle": mle(grid, curve), "intervals": {}}
    for level in levels:
        key = f"{level:g}"
        entry = {"nominal": asdict(interval(grid, curve, wilks_threshold(level)))}
        if thresholds and key in thresholds:
            entry["recalibrated"] = asdict(interval(grid, curve, thresholds[key]))
            entry["recalibrated_threshold"] = thresholds[key]
        out["intervals"][key] = entry
    return out


def dataset_curves(model_path: str | Path, merged_dir: str | Path, masks_path: str | Path, grid_cfg: dict,
                   out_path: str | Path, batch_size: int = 64, *, device: str | torch.device = "cpu") -> np.ndarray:
    """Normalised curves of every image of a simulated dataset, saved with the truths (``.npz``: grid, curves,
    gamma, n_sub).

    Datasets stored noiseless (``storage.noiseless``) get one fixed noise realisation per image, seeded by the
    dataset name, so their curves are reproducible. The model runs on ``device`` (the rule's, see
    :func:`lensinfer.device.select_device`); curves are written batch by batch (:class:`lensinfer.data.npz.NpzWriter`),
    so memory does not grow with the dataset, and returned as a read-only memory map of the file.
    """
    from .data.loader import ChunkShuffleLoader, MergedDataset, noise_model_of
    from .data.npz import NpzWriter, load_npz_lazy
    from .seeds import torch_seed
    from .train import load_model

    device = torch.device(device)
    model, whitening = load_model(model_path, device)
    model = model.fused()  # BN folded into the convolutions, channels_last: same curves, half the CPU time
    data = MergedDataset(merged_dir, masks_path)
    loader = ChunkShuffleLoader(data, whitening, batch_size, seed=torch_seed(0, f"curves/{data.manifest.dataset}"),
                                shuffle=False, drop_last=False, noise=noise_model_of(data))
    grid = grid_centres(grid_cfg["low"], grid_cfg["high"], grid_cfg["n"])
    theta = torch.as_tensor(whitening.theta(grid), dtype=torch.float32, device=device)
    with NpzWriter(out_path) as npz:
        npz.add("grid", grid)
        with npz.stream("curves", (len(data), len(grid)), np.float32) as rows, torch.inference_mode():
            for x, _ in loader:
                rows.write(normalise(model.log_ratio_grid(x.to(device), theta).float().cpu().numpy()))
        npz.add("gamma", data.column("gamma_pop"))
        npz.add("n_sub", data.column("n_sub"))
    return load_npz_lazy(out_path)["curves"]


def _thresholds_for(thresholds: dict, set_size: int) -> dict[str, float] | None:
    entry = thresholds["set_sizes"].get(str(set_size))
    return entry["thresholds"] if entry else None


def load_observations(images: list[str], masks: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Stacked observation images (N, [C,] H, W) float32 and masks (N, H, W) bool from ``.npy`` files."""
    x = np.stack([np.load(p).astype(np.float32) for p in images])
    m = np.stack([np.load(p).astype(bool) for p in masks])
    return x, m


def summarise_observations(*, names: list[str], grid: np.ndarray, curves: np.ndarray, thresholds_path: str | Path,
                           kde_path: str | Path | None, inference_cfg: dict, out_summary: str | Path,
                           out_curves: str | Path, extra: dict | None = None) -> dict:
    """Per-lens and combined summaries of normalised γ curves (any estimator) → ``summary.json`` and ``curves.csv``.

    Per lens: MLE and intervals with the N = 1 thresholds; combined (Σ of curves, :func:`combine`): the thresholds
    of N = number of lenses when calibrated, else of ``inference.combine_size``. With
    ``inference.kde_calibration`` the curves are first KDE-calibrated (:mod:`lensinfer.calibrate`).
    """
    from .calibrate import apply_kde_calibration

    thresholds = json.loads(Path(thresholds_path).read_text())
    curves = normalise(curves)
    if inference_cfg.get("kde_calibration"):
        if kde_path is None:
            raise ValueError("inference.kde_calibration needs the KDE calibration file")
        curves = apply_kde_calibration(curves, dict(np.load(kde_path)))
    levels = inference_cfg["levels"]
    per_lens = {name: summarise_curve(grid, c, levels, _thresholds_for(thresholds, 1)) for name, c in zip(names, curves)}
    combined_curve = combine(curves)
    n_comb = len(names) if str(len(names)) in thresholds["set_sizes"] else int(inference_cfg["combine_size"])
    summary = {
        "grid": {"low": float(grid[0]), "high": float(grid[-1]), "n": len(grid)},
        "n_lenses": len(names),
        "kde_calibration": bool(inference_cfg.get("kde_calibration")),
        "per_lens": per_lens,
        "combined": summarise_curve(grid, combined_curve, levels, _thresholds_for(thresholds, n_comb)),
        "combined_threshold_set_size": n_comb,
    }
    if extra:
        summary.update(extra)
    Path(out_summary).write_text(json.dumps(summary, indent=2) + "\n")
    with open(out_curves, "w") as fh:
        fh.write("gamma," + ",".join(names) + ",combined\n")
        for g, row, c in zip(grid, curves.T, combined_curve):
            fh.write(f"{g:.6f}," + ",".join(f"{v:.6f}" for v in row) + f",{c:.6f}\n")
    return summary


def infer_observations(*, model_path: str | Path, thresholds_path: str | Path, kde_path: str | Path,
                       names: list[str], images: list[str], masks: list[str], inference_cfg: dict,
                       out_summary: str | Path, out_curves: str | Path) -> dict:
    """Per-lens curves, MLEs and intervals (N = 1 thresholds) and the combined result (N = combine_size)."""
    from .train import load_model

    model, whitening = load_model(model_path)
    model = model.fused()  # BN folded into the convolutions, channels_last: same curves, half the CPU time
    grid = grid_centres(**{k: inference_cfg["grid"][k] for k in ("low", "high", "n")})
    x, m = load_observations(images, masks)
    curves = log_ratio_curves(model, whitening, x, m, grid)
    return summarise_observations(names=names, grid=grid, curves=curves, thresholds_path=thresholds_path,
                                  kde_path=kde_path, inference_cfg=inference_cfg, out_summary=out_summary,
                                  out_curves=out_curves)


def infer_simulated_sets(curves_path: str | Path, thresholds_path: str | Path, inference_cfg: dict, seed: int,
                         out_path: str | Path) -> dict:
    """MLEs of disjoint sets of ``combine_size`` simulated lenses (e.g. CDM tests) and their 16/50/84 percentiles."""
    blob = np.load(curves_path)
    grid, curves = blob["grid"], blob["curves"]
    n = int(inference_cfg["combine_size"])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(curves))
    n_sets = len(curves) // n
    if n_sets == 0:
        raise ValueError(f"{curves_path}: fewer images ({len(curves)}) than inference.combine_size={n}")
    mles = np.array([mle(grid, combine(curves[order[i * n:(i + 1) * n]])) for i in range(n_sets)])
    result = {
        "set_size": n,
        "n_sets": int(n_sets),
        "mles": mles.tolist(),
        "mle_percentiles": dict(zip(("16", "50", "84"), np.percentile(mles, [16, 50, 84]).tolist())),
        "single_image_mles": [mle(grid, c) for c in curves],
    }
    Path(out_path).write_text(json.dumps(result, indent=2) + "\n")
    return result
