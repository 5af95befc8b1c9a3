"""γ-grid log-ratio curves, their combination over lenses, MLEs and interpolated intervals (spec/science.md §4).

With late fusion the estimator's θ enters after pooling, so each image is embedded once and only the small head
runs on the grid (:meth:`lensinfer.models.ratio.RatioEstimator.log_ratio_grid`: one ResNet pass plus 150 cheap head
evaluations instead of 150 ResNet passes per image; ``bench/infer.py`` measures the difference). FiLM-conditioned
estimators fall back to one pass per grid point. Curves are normalised to a maximum of 0; the
combined curve of N lenses is the sum of their curves (independent lenses, flat prior on the grid range).
Intervals are {θ : −2Δlog r̂(θ) ≤ t}, with the crossings located by linear interpolation between grid points
(the reference took the nearest grid point) and flagged when they hit the grid edge. That curve algebra lives in
:mod:`lensinfer.curves` (shared with :mod:`lensinfer.calibrate`) and is re-exported here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .curves import Interval, combine, grid_centres, interval, mle, normalise, summarise_curve, wilks_threshold
from .data.loader import Whitening
from .models.ratio import RatioEstimator
from .data.observed import load_observations
from .progress import progress

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


@torch.inference_mode()
def log_ratio_curves(model: RatioEstimator, whitening: Whitening, images: np.ndarray, masks: np.ndarray,
                     grid: np.ndarray, batch_size: int = 64, device: str | torch.device = "cpu") -> np.ndarray:
    """Unnormalised log r̂(x_i | θ_g) for images (B, [C,] H, W) on the grid (G,) → (B, G); embed once, head × G."""
    model.eval()
    theta = torch.as_tensor(whitening.theta(np.asarray(grid, dtype=np.float64)), dtype=torch.float32, device=device)
    out = []
    with progress(len(images), "NRE γ curves") as bar:
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(whitening.images(images[i:i + batch_size], masks[i:i + batch_size])).to(device)
            out.append(model.log_ratio_grid(x, theta).float().cpu().numpy())
            bar.update(len(x))
    return np.concatenate(out) if out else np.zeros((0, len(grid)))


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
        with npz.stream("curves", (len(data), len(grid)), np.float32) as rows, torch.inference_mode(), \
                progress(len(data), f"NRE γ curves of {data.manifest.dataset}", unit="image") as bar:
            for x, _ in loader:
                rows.write(normalise(model.log_ratio_grid(x.to(device), theta).float().cpu().numpy()))
                bar.update(len(x))
        npz.add("gamma", data.column("gamma_pop"))
        npz.add("n_sub", data.column("n_sub"))
    return load_npz_lazy(out_path)["curves"]


def summarise_observations(*, names: list[str], grid: np.ndarray, curves: np.ndarray, thresholds_path: str | Path,
                           kde_path: str | Path | None, inference_cfg: dict, out_summary: str | Path,
                           out_curves: str | Path, extra: dict | None = None,
                           misspecification: dict | None = None, coverage_curves: str | Path | None = None,
                           calibrate_cfg: dict | None = None, seed: int = 0) -> dict:
    """Per-lens and combined summaries of normalised γ curves (any estimator) → ``summary.json`` and ``curves.csv``.

    Per lens: MLE and intervals with the N = 1 thresholds, and (with ``misspecification``, the record of
    :func:`lensinfer.misspecification.run_misspecification`) ``per_lens[name]["misspecification"] = {noise_ratio,
    score, p_value, flagged, reasons}``. Combined (Σ of curves, :func:`combine`) over every lens, or with
    ``inference.exclude_flagged`` over the lenses not flagged; its thresholds are those of N = the number of lenses
    combined — from the calibrate stage, or computed on demand from ``coverage_curves``
    (:func:`lensinfer.calibrate.set_size_thresholds`), never those of another N. With ``inference.kde_calibration``
    the curves are first KDE-calibrated (:mod:`lensinfer.calibrate`).
    """
    from .calibrate import apply_kde_calibration, set_size_thresholds
    from .misspecification import summary_entry

    thresholds = json.loads(Path(thresholds_path).read_text())
    curves = normalise(curves)
    if inference_cfg.get("kde_calibration"):
        if kde_path is None:
            raise ValueError("inference.kde_calibration needs the KDE calibration file")
        curves = apply_kde_calibration(curves, dict(np.load(kde_path)))
    levels = inference_cfg["levels"]

    def thresholds_for(n: int) -> tuple[dict[str, float], str]:
        return set_size_thresholds(thresholds, n, coverage_curves=coverage_curves, calibrate_cfg=calibrate_cfg,
                                   levels=levels, seed=seed)

    single, _ = thresholds_for(1)
    per_lens = {name: summarise_curve(grid, c, levels, single) for name, c in zip(names, curves)}
    flagged: list[str] = []
    if misspecification is not None:
        for name in names:
            per_lens[name]["misspecification"] = summary_entry(misspecification, name)
        flagged = [n for n in names if per_lens[n]["misspecification"]["flagged"]]
    exclude = bool(inference_cfg.get("exclude_flagged")) and bool(flagged)
    if bool(inference_cfg.get("exclude_flagged")) and misspecification is None:
        raise ValueError("inference.exclude_flagged needs the misspecification check (rule misspecification)")
    included = [n for n in names if not (exclude and n in flagged)]
    if not included:
        raise ValueError(f"every observed lens ({', '.join(names)}) is flagged as misspecified: nothing left to "
                         "combine with inference.exclude_flagged: true (set it to false to combine them anyway)")
    keep = np.array([n in included for n in names])
    combined_curve = combine(curves[keep])
    comb_thresholds, source = thresholds_for(len(included))
    summary = {
        "grid": {"low": float(grid[0]), "high": float(grid[-1]), "n": len(grid)},
        "n_lenses": len(names),
        "kde_calibration": bool(inference_cfg.get("kde_calibration")),
        "per_lens": per_lens,
        "combined": summarise_curve(grid, combined_curve, levels, comb_thresholds),
        "combined_threshold_set_size": len(included),
        "combined_thresholds_source": source,
        "combined_lenses": included,
        "excluded_lenses": [n for n in names if n not in included],
        "flagged_lenses": flagged,
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
                       out_summary: str | Path, out_curves: str | Path, metadata: list[str] | None = None,
                       **summary_kw: Any) -> dict:
    """Per-lens curves, MLEs and intervals (N = 1 thresholds) and the combined result (thresholds of the number of
    lenses combined); ``summary_kw``: misspecification, coverage_curves, calibrate_cfg, seed
    (:func:`summarise_observations`).

    Observations off the model's training grid (shape, bands, pixel scale or zero point in ``metadata``, the
    preprocessing records) are refused (:func:`lensinfer.checkpoint.check_observations`) before anything is written."""
    from .checkpoint import check_observations, load_model_file
    from .train import load_model

    model, whitening = load_model(model_path)
    model = model.fused()  # BN folded into the convolutions, channels_last: same curves, half the CPU time
    grid = grid_centres(**{k: inference_cfg["grid"][k] for k in ("low", "high", "n")})
    x, m = load_observations(images, masks)
    notes = check_observations(model_path, load_model_file(model_path).get("grid"), whitening.n_channels, names, x,
                               metadata)
    curves = log_ratio_curves(model, whitening, x, m, grid)
    return summarise_observations(names=names, grid=grid, curves=curves, thresholds_path=thresholds_path,
                                  kde_path=kde_path, inference_cfg=inference_cfg, out_summary=out_summary,
                                  out_curves=out_curves, extra={"input_notes": notes} if notes else None,
                                  **summary_kw)


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
