"""Misspecification check of observed lenses against the simulations the estimator was trained on.

A trained estimator's number is only meaningful for data that look like its training simulations. Checks per
observed (preprocessed) lens, all computed in the DAG (rule ``misspecification``) and carried into
``summary.json`` as ``per_lens[name]["misspecification"] = {"noise_ratio", "score", "p_value", "flagged",
"reasons"}``:

(a) **Noise and background.** The background σ of the observation against the simulation's background σ (the
    shards' ``sigma_bkg``): ``noise_ratio``. The preprocessing measures σ twice (``metadata.json``): on the input
    frame (``background_sigma_input_e_per_s_per_pixel``, sigma-clipped std of an annulus around the lens) and on
    the resampled grid (``noise_sigma``). Flux-conserving resampling correlates the noise — a sub-pixel recentring
    alone lowers the per-pixel σ by up to a factor 2 (σ × ((1−f)² + f²) per axis ≥ ½) — so the resampled σ of a
    perfectly matched mock lies anywhere in [½, 1] × σ_sim. The check therefore uses the input σ, carried to the
    analysis grid as white noise: σ_in × (flux scale of the zero-point conversion) × (analysis / input pixel scale)
    (a sum of (s_out/s_in)² independent input pixels), which matched mocks reproduce to a few per cent. The accepted
    band is ``inference.misspecification.noise_ratio_range`` (default [0.8, 1.25]). (Drizzled real images have
    correlated input noise too, which lowers the ratio; the band's lower end allows for ~20 %.) The residual
    background — the 3σ-clipped median of the image's outer ring (``border`` pixels wide), in units of the
    simulation's σ — is reported beside the 1–99 % range of the same statistic on the simulated images.

(a′) **Camera pixel scale.** The input frame's pixel scale (from its WCS, ``input_pixel_scale_arcsec`` of the
    preprocessing record) against the pixel scale the simulations were rendered at (the shards' ``pixel_scale``):
    ``pixel_scale_ratio``. The preprocessing resamples any frame onto the analysis grid, so a frame from a camera
    with other pixels gives an image of the right size whose PSF, pixel response and noise correlation were never
    simulated (a 0.04″ HST cutout through a 0.08″ model: the effective PSF is ~40 % narrower). No image statistic
    separates that reliably from the training family at the demo's depth (bench/misspecification.py: 1 of 30 by
    image statistics), while the WCS says it exactly, so it is checked directly: flagged when the ratio differs from
    1 by more than ``inference.misspecification.pixel_scale_tolerance`` (default 5 %).

(b) **Distance in the estimator's own embedding.** Every image is mapped by the estimator's ResNet trunk (the NRE's
    pooled features, the NPE's flow context) after the same whitening and masking as in inference. The reference
    cloud is the embedding of simulated images held out from training (the coverage test set, and the KDE
    calibration set): a Gaussian with the empirical mean and the Ledoit–Wolf shrunk covariance (Ledoit & Wolf 2004,
    J. Multivariate Anal. 88, 365) is fitted on one half of them (even indices) and the *score* of an image is its
    Mahalanobis distance d(x) = √((f − μ)ᵀ Σ⁻¹ (f − μ)) (Lee et al. 2018, NeurIPS, "A simple unified framework for
    detecting out-of-distribution samples", uses the same score on a network's features). The other half (odd
    indices) is *held out*: the p-value of an observation is the conformal p-value
    p = (1 + #{held-out d ≥ d_obs}) / (1 + n_held-out) (Vovk et al. 2005), valid (P(p ≤ α) ≤ α) for an observation
    drawn like the simulations.

(c) **Image statistics, independent of the network.** A trained embedding need not respond to what its training
    never varied (a wider PSF, another pixel scale, clumpier sources): it was trained to ignore whatever does not
    inform the target. The same Gaussian reference and conformal p-value are therefore also computed on a fixed,
    model-free summary of each whitened image, whole frame (:func:`image_statistics`): the shape of the azimuthally
    averaged log power spectrum in radial bands below Nyquist — the PSF width and the pixel scale set its slope —
    and its level. (The Nyquist band and pixel moments are left out: the preprocessing's resampling and background
    subtraction move them for matched observations too.) Summary statistics are the classical
    two-sample features of simulation-based inference (Cranmer, Brehmer & Louppe 2020, PNAS 117, 30055, §"summary
    statistics"); here they guard the learned one.

(d) **Peak count: structure the simulations never made.** Neither a lens-parameter embedding nor a power spectrum
    responds to a source with star-forming clumps instead of a smooth Sérsic profile (bench/misspecification.py:
    0 of 30 clumpy-source mocks by either). Clumps are compact: after a matched filter (the image convolved with a
    Gaussian of the PSF's width, the optimal filter for point-like features) each lensed clump is a local maximum.
    The *peak count* of an image is the number of pixels of the filtered image, in units of the simulations'
    background σ, that exceed ``inference.misspecification.peak_threshold`` (default 5) and their 8 neighbours —
    the peak counts of weak-lensing cosmology (Jain & Van Waerbeke 2000, ApJ 530, L1; Kratochvil, Haiman & May
    2010, PRD 81, 043519), here a one-sided test: the p-value is the conformal
    p = (1 + #{reference images with at least as many peaks}) / (1 + n_reference) over the simulated reference
    images. The filter width is ``inference.misspecification.peak_smoothing`` pixels, by default the simulated
    Gaussian PSF's σ on the analysis grid (1 pixel for a pixel or drawn PSF). Subhalos, which the simulations do
    make, also split arcs into peaks: the count separates clumpy sources from the training family only where the
    clumps outnumber what the simulated subhalos produce (measured rates: README). Noise maxima along bright arcs
    count too; the reference images carry the same, so matched observations stay calibrated, and one with more or
    brighter arc structure than any simulation is flagged — rightly: it lies outside the training set.

The p-values are combined with Bonferroni's rule, p = min(1, k · min(p_1, …, p_k)) over the k tests computed (the
embedding, the image statistics, the peak count), which keeps P(p ≤ α) ≤ α for matched observations. A lens is
**flagged** when p < ``alpha`` (default 0.01), the noise ratio is outside the accepted band or its input pixel scale
is not the simulated one. ``inference.exclude_flagged: true`` leaves flagged lenses out of the combined γ
(:func:`lensinfer.infer.summarise_observations`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from astropy.stats import sigma_clipped_stats
from sklearn.covariance import LedoitWolf

__all__ = [
    "DEFAULTS",
    "Reference",
    "embed_images",
    "embed_dataset",
    "image_statistics",
    "N_POWER_BINS",
    "peak_counts",
    "peak_smoothing",
    "peak_smoothing_pixels",
    "fit_reference",
    "mahalanobis",
    "conformal_p_values",
    "border_background",
    "simulation_sigma",
    "assess",
    "summary_entry",
    "observed_noise_sigma",
    "observed_pixel_scale",
    "simulation_pixel_scale",
    "run_misspecification",
    "PERTURBATIONS",
    "perturbed_config",
    "preprocessed_mocks",
    "flag_rates",
    "write_cosmos_test_split",
]

#: defaults of ``inference.misspecification`` (also in the schema)
DEFAULTS: dict[str, Any] = {"alpha": 0.01, "noise_ratio_range": [0.8, 1.25], "pixel_scale_tolerance": 0.05,
                            "border": 3, "max_reference": 4000, "peak_threshold": 5.0, "peak_smoothing": None}


def _embedder(model: torch.nn.Module) -> Any:
    """The θ-independent image embedding of either estimator (NRE: ResNet features; NPE: flow context)."""
    embed_once = getattr(model, "embed_once", True)
    if not embed_once:
        raise ValueError("the misspecification check needs a θ-independent embedding; a FiLM-conditioned ratio "
                         "estimator (model.conditioning: film) has none")
    return model.embed


@torch.inference_mode()
def embed_images(model: torch.nn.Module, whitening: Any, images: np.ndarray, masks: np.ndarray,
                 batch_size: int = 64) -> np.ndarray:
    """Embedding (B, F) float64 of raw images (B, [C,] H, W) with masks (B, H, W), whitened as in inference."""
    embed = _embedder(model)
    out = [embed(torch.from_numpy(whitening.images(images[i:i + batch_size], masks[i:i + batch_size]))).double().numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0))


#: radial bands of the power spectrum in :func:`image_statistics`
N_POWER_BINS = 8


def image_statistics(images: np.ndarray, whitening: Any) -> np.ndarray:
    """Model-free summary (B, C·(N_POWER_BINS − 1)) float64 of raw images (B, [C,] H, W), whitened with the training
    constants over the *whole* frame (no mask: the PSF shows in the outer arcs too): per band, the shape of the
    azimuthally averaged power spectrum |FFT|²/(H·W) — log10 power in ``N_POWER_BINS`` equal radial bands from the
    lowest non-zero frequency to Nyquist (0.5 cycles per pixel) minus its mean over the bands, bands 2 … N−1 kept (a
    brighter lens does not change the shape, a wider PSF steepens it) — and that mean (the overall level).

    Left out on purpose: the Nyquist band and pixel moments (σ, skewness, kurtosis). The ``calibrated``
    preprocessing's sub-pixel resampling damps the Nyquist band and its background subtraction shifts the moments,
    so that matched mock observations (bench/misspecification.py, 30 per condition) were flagged 10 % of the time
    with them at alpha 0.01, and 0 % without (module docstring, (c))."""
    raw = np.asarray(images, np.float32)
    x = np.asarray(whitening.images(raw, np.ones((raw.shape[0],) + raw.shape[-2:], np.float32)), np.float64)
    x = x[:, None] if x.ndim == 3 else x
    b, c, h, w = x.shape
    k = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    edges = np.linspace(1.0 / max(h, w), 0.5, N_POWER_BINS + 1)
    band = np.digitize(k, edges) - 1  # −1: the DC term and below the first band; N_POWER_BINS: beyond Nyquist
    power = np.abs(np.fft.rfft2(x)) ** 2 / (h * w)  # (B, C, H, W//2+1)
    spec = np.log10(np.stack([power[..., band == j].mean(axis=-1) for j in range(N_POWER_BINS)], axis=-1) + 1e-12)
    level = spec.mean(axis=-1, keepdims=True)
    feats = np.concatenate([(spec - level)[..., 1:-1], level], -1)
    return feats.reshape(b, -1)


def peak_smoothing_pixels(instrument: Mapping[str, Any]) -> float:
    """σ (analysis pixels) of the peak count's matched filter (module docstring, (d)): the simulated Gaussian PSF's
    σ = FWHM / (2√(2 ln 2)) / pixel scale (multi-band: the reference band's PSF, else the first band's); 1 pixel
    for a pixel PSF or a FWHM drawn from a prior."""
    from .simulate.instrument import band_configs, reference_band

    bands = band_configs(instrument)  # each band's own keys over the frame's (a band psf replaces the frame's)
    psf = (dict(bands)[reference_band(instrument)] if bands else instrument).get("psf") or {}
    fwhm = psf.get("fwhm")
    if psf.get("type", "gaussian") != "gaussian" or not isinstance(fwhm, (int, float)) or fwhm <= 0:
        return 1.0
    return float(fwhm) / (2.0 * np.sqrt(2.0 * np.log(2.0))) / float(instrument["pixel_scale"])


def peak_smoothing(cfg: Mapping[str, Any], instrument: Mapping[str, Any] | None) -> float:
    """The filter σ in pixels: ``cfg["peak_smoothing"]`` when set, else :func:`peak_smoothing_pixels` of the
    simulated ``instrument`` (1 pixel without one)."""
    value = cfg.get("peak_smoothing")
    if value is not None:
        return float(value)
    return 1.0 if instrument is None else peak_smoothing_pixels(instrument)


def peak_counts(images: np.ndarray, sim_sigma: float, smoothing: float, threshold: float = 5.0) -> np.ndarray:
    """Peak count (B,) float64 of raw images (B, [C,] H, W) in e⁻/s (module docstring, (d)): local maxima (3 × 3,
    edges repeated) of each band convolved with a Gaussian of σ = ``smoothing`` pixels, in units of ``sim_sigma``,
    above ``threshold``; summed over bands."""
    from scipy import ndimage

    if not (np.isfinite(sim_sigma) and sim_sigma > 0):
        raise ValueError(f"peak_counts: the simulations' background sigma must be > 0, got {sim_sigma}")
    x = np.asarray(images, np.float64) / sim_sigma
    x = x[:, None] if x.ndim == 3 else x
    # the whole batch at once: filters along the two image axes only (σ 0 and size 1 on image and band axes)
    g = ndimage.gaussian_filter(x, (0, 0, float(smoothing), float(smoothing)), mode="nearest")
    peaks = (g == ndimage.maximum_filter(g, (1, 1, 3, 3), mode="nearest")) & (g > threshold)
    return peaks.sum(axis=(1, 2, 3)).astype(np.float64)


@torch.inference_mode()
def embed_dataset(model: torch.nn.Module, whitening: Any, merged_dir: str | Path, masks_path: str | Path,
                  max_images: int | None = None, batch_size: int = 64, border: int = 3, statistics: bool = False,
                  peaks: tuple[float, float] | None = None) -> tuple[np.ndarray, ...]:
    """(embedding (N, F), border background (N,) in e⁻/s) of a simulated dataset's images, with the same fixed noise
    realisation as their γ curves (noiseless storage: seeded by the dataset name), at most ``max_images``; with
    ``statistics``, also their :func:`image_statistics` (N, S) as a third array; with ``peaks`` = (smoothing,
    threshold), also their :func:`peak_counts` (N,) at the dataset's own background σ as the last array."""
    from .data.loader import MergedDataset, noise_model_of
    from .seeds import torch_seed

    data = MergedDataset(merged_dir, masks_path)
    noise = noise_model_of(data)
    n = len(data) if max_images is None else min(len(data), int(max_images))
    gen = torch.Generator().manual_seed(torch_seed(0, f"misspecification/{data.manifest.dataset}"))
    embed = _embedder(model)
    sigma = simulation_sigma(data.shard_attrs()) if peaks is not None else None
    feats, bkg, stats, counts = [], [], [], []
    for i in range(0, n, batch_size):
        x, m = data.read(np.arange(i, min(i + batch_size, n)))
        if noise is not None:
            noise.add_(x, gen)
        bkg.append(np.array([border_background(img, border) for img in x]))
        if statistics:
            stats.append(image_statistics(x, whitening))
        if peaks is not None:
            counts.append(peak_counts(x, sigma, *peaks))
        feats.append(embed(torch.from_numpy(whitening.images(x, m))).double().numpy())
    out = [np.concatenate(feats), np.concatenate(bkg)]
    if statistics:
        out.append(np.concatenate(stats))
    if peaks is not None:
        out.append(np.concatenate(counts))
    return tuple(out)


@dataclass(frozen=True)
class Reference:
    """Gaussian reference of simulated embeddings: mean (F,), precision (F, F), held-out scores (M,)."""

    mean: np.ndarray
    precision: np.ndarray
    heldout_scores: np.ndarray
    n_fit: int


def mahalanobis(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """√((f − μ)ᵀ P (f − μ)) per row of ``features`` (B, F)."""
    d = np.atleast_2d(features) - mean
    return np.sqrt(np.maximum(np.einsum("bi,ij,bj->b", d, precision, d), 0.0))


def fit_reference(features: np.ndarray) -> Reference:
    """Fit mean and Ledoit–Wolf covariance on the even rows of simulated embeddings, score the odd rows (held out)."""
    features = np.asarray(features, np.float64)
    if len(features) < 20:
        raise ValueError(f"misspecification: {len(features)} simulated reference images; need at least 20 "
                         "(enlarge the coverage/KDE datasets)")
    fit, held = features[0::2], features[1::2]
    lw = LedoitWolf().fit(fit)
    mean, precision = lw.location_, lw.precision_
    return Reference(mean, precision, mahalanobis(held, mean, precision), len(fit))


def conformal_p_values(scores: np.ndarray, heldout_scores: np.ndarray) -> np.ndarray:
    """(1 + #{held-out ≥ s}) / (1 + M) per score s: valid p-values for exchangeable (matched) observations."""
    held = np.sort(np.asarray(heldout_scores, np.float64))
    n_ge = len(held) - np.searchsorted(held, np.asarray(scores, np.float64), side="left")
    return (1.0 + n_ge) / (1.0 + len(held))


def border_background(image: np.ndarray, border: int = 3) -> float:
    """3σ-clipped median of the outer ``border`` pixels of an image (H, W) or its first band (C, H, W)."""
    img = np.asarray(image, np.float64)
    img = img[0] if img.ndim == 3 else img
    ring = np.ones(img.shape, bool)
    ring[border:-border, border:-border] = False
    _, median, _ = sigma_clipped_stats(img[ring], sigma=3.0, maxiters=10)
    return float(median)


def simulation_sigma(shard_attrs: Sequence[Mapping[str, Any]]) -> float:
    """Background σ of the simulations (shard attribute ``sigma_bkg``; multi-band: the reference band's, the band
    whose σ the preprocessing reports as ``noise_sigma``)."""
    attrs = shard_attrs[0]
    sigma = attrs["sigma_bkg"]
    if isinstance(sigma, (list, tuple)):
        bands = list(attrs.get("bands") or [])
        ref = attrs.get("reference_band")
        sigma = sigma[bands.index(ref)] if ref in bands else sigma[0]
    return float(sigma)


def simulation_pixel_scale(shard_attrs: Sequence[Mapping[str, Any]]) -> float | None:
    """Pixel scale (″) the simulations were rendered at (shard attribute ``pixel_scale``), None if not recorded."""
    value = shard_attrs[0].get("pixel_scale") if shard_attrs else None
    return None if value is None else float(value)


def observed_pixel_scale(metadata: Mapping[str, Any]) -> float | None:
    """Pixel scale (″) of an observation's input frame: the geometric mean of the two WCS axis scales the
    preprocessing recorded (``input_pixel_scale_arcsec``; multi-band: the first band's), None if not recorded."""
    value = metadata.get("input_pixel_scale_arcsec")
    if value is None:
        return None
    flat = np.asarray(value, float).ravel()
    return float(np.sqrt(abs(flat[0] * flat[1]))) if flat.size >= 2 else float(abs(flat[0]))


def assess(*, names: Sequence[str], features: np.ndarray, noise_sigmas: Sequence[float | None],
           backgrounds: Sequence[float], reference: Reference, sim_sigma: float, sim_backgrounds: np.ndarray,
           cfg: Mapping[str, Any] | None = None, statistics: np.ndarray | None = None,
           statistics_reference: Reference | None = None, pixel_scales: Sequence[float | None] | None = None,
           sim_pixel_scale: float | None = None, peaks: np.ndarray | None = None,
           peak_reference: np.ndarray | None = None) -> dict[str, Any]:
    """The check's record: per lens noise ratio, pixel-scale ratio, background, score, p-value, flag and reasons;
    plus the settings.

    With ``statistics`` (:func:`image_statistics` of the observations) and their ``statistics_reference``, the
    p-value is the Bonferroni combination of the embedding's and the statistics' (module docstring). With
    ``pixel_scales`` (input frames, :func:`observed_pixel_scale`) and ``sim_pixel_scale``, a frame whose pixels
    differ from the simulated camera's by more than ``pixel_scale_tolerance`` is flagged (module docstring, (a′)).
    With ``peaks`` (:func:`peak_counts` of the observations) and ``peak_reference`` (those of the simulated reference
    images), the one-sided peak-count p-value joins the Bonferroni combination (module docstring, (d))."""
    cfg = {**DEFAULTS, **dict(cfg or {})}
    alpha = float(cfg["alpha"])
    lo, hi = (float(v) for v in cfg["noise_ratio_range"])
    tol = float(cfg["pixel_scale_tolerance"])
    if pixel_scales is not None and len(pixel_scales) != len(names):
        raise ValueError(f"assess: {len(pixel_scales)} pixel scales for {len(names)} lenses")
    scores = mahalanobis(features, reference.mean, reference.precision)
    p_emb = conformal_p_values(scores, reference.heldout_scores)
    if (statistics is None) != (statistics_reference is None):
        raise ValueError("assess: statistics and statistics_reference go together")
    tests = {"embedding": p_emb}
    stat_scores = p_stat = p_peak = None
    if statistics is not None:
        stat_scores = mahalanobis(statistics, statistics_reference.mean, statistics_reference.precision)
        p_stat = tests["image-statistics"] = conformal_p_values(stat_scores, statistics_reference.heldout_scores)
    if (peaks is None) != (peak_reference is None):
        raise ValueError("assess: peaks and peak_reference go together")
    if peaks is not None:
        if len(peaks) != len(names):
            raise ValueError(f"assess: {len(peaks)} peak counts for {len(names)} lenses")
        p_peak = tests["peak-count"] = conformal_p_values(np.asarray(peaks, float), np.asarray(peak_reference, float))
    p_all = np.stack(list(tests.values()))  # (k, B)
    p = np.minimum(1.0, len(tests) * p_all.min(axis=0))
    which_test = [list(tests)[j] for j in p_all.argmin(axis=0)]
    sim_bkg_range = [float(v / sim_sigma) for v in np.percentile(sim_backgrounds, [1, 99])]
    lenses: dict[str, Any] = {}
    for i, name in enumerate(names):
        sigma = noise_sigmas[i]
        ratio = float(sigma) / sim_sigma if sigma is not None and np.isfinite(sigma) else float("nan")
        reasons = []
        if p[i] < alpha:
            reasons.append(f"{which_test[i]} p-value {p[i]:.3g} < alpha {alpha:g}"
                           + ("" if len(tests) == 1 else f" (Bonferroni over the {', '.join(tests)} tests)"))
        if not lo <= ratio <= hi:
            reasons.append(f"noise ratio {ratio:.3g} outside [{lo:g}, {hi:g}]")
        scale = None if pixel_scales is None else pixel_scales[i]
        scale_ratio = (float(scale) / float(sim_pixel_scale)
                       if scale is not None and sim_pixel_scale and np.isfinite(scale) else float("nan"))
        if np.isfinite(scale_ratio) and abs(scale_ratio - 1.0) > tol:
            reasons.append(f"input pixel scale {float(scale):.4g}\u2033 is not the simulated camera's "
                           f"{float(sim_pixel_scale):.4g}\u2033 (ratio {scale_ratio:.3g}; tolerance \u00b1{tol:g})")
        lenses[name] = {
            "noise_ratio": ratio,
            "noise_sigma": None if sigma is None else float(sigma),
            "background_sigma_units": float(backgrounds[i] / sim_sigma),
            "score": float(scores[i]),
            "p_value": float(p[i]),
            "flagged": bool(reasons),
            "reasons": reasons,
            "p_value_embedding": float(p_emb[i]),
            "pixel_scale_ratio": scale_ratio,
        }
        if p_stat is not None:
            lenses[name].update(score_statistics=float(stat_scores[i]), p_value_statistics=float(p_stat[i]))
        if p_peak is not None:
            lenses[name].update(peak_count=int(peaks[i]), p_value_peaks=float(p_peak[i]))
    return {
        "method": "Mahalanobis distance in the estimator's embedding (Ledoit-Wolf covariance), conformal p-value "
                  "against held-out simulated images"
                  + ("" if p_stat is None else "; the same on model-free image statistics (shape and level of the "
                     "radial power spectrum)")
                  + ("" if p_peak is None else "; the number of matched-filter peaks above the threshold, one-sided "
                     "against the simulated images")
                  + ("" if len(tests) == 1 else "; the p-values Bonferroni-combined")
                  + "; noise sigma against the simulation's sigma_bkg; input pixel scale against the simulated one",
        "alpha": alpha,
        "noise_ratio_range": [lo, hi],
        "pixel_scale_tolerance": tol,
        "simulation_pixel_scale": None if sim_pixel_scale is None else float(sim_pixel_scale),
        "simulation_sigma_bkg": float(sim_sigma),
        "simulation_background_sigma_units_1_99": sim_bkg_range,
        "tests": list(tests),
        **({} if peak_reference is None else {
            "peak_threshold": float(cfg["peak_threshold"]),
            "reference_peak_count_percentiles": dict(zip(("50", "90", "99"), np.percentile(
                np.asarray(peak_reference, float), [50, 90, 99]).tolist()))}),
        "n_reference_fit": int(reference.n_fit),
        "n_reference_heldout": int(len(reference.heldout_scores)),
        "heldout_score_percentiles": dict(zip(("50", "90", "99"),
                                              np.percentile(reference.heldout_scores, [50, 90, 99]).tolist())),
        "lenses": lenses,
        "flagged": [n for n in names if lenses[n]["flagged"]],
    }


def summary_entry(record: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What ``summary.json`` carries per lens: noise_ratio, score, p_value, flagged, and the reasons of a flag
    (empty when not flagged; the full record is ``misspecification.json``)."""
    lens = record["lenses"][name]
    return {k: lens[k] for k in ("noise_ratio", "score", "p_value", "flagged")} | {"reasons": list(lens["reasons"])}


def observed_noise_sigma(metadata: Mapping[str, Any]) -> float | None:
    """Background σ of an observation on the analysis grid as white noise (module docstring, (a)): the input
    frame's σ × zero-point flux scale × analysis/input pixel scale; the resampled ``noise_sigma`` when the input σ
    is not recorded (multi-band: the reference band's)."""
    sigma_in = metadata.get("background_sigma_input_e_per_s_per_pixel")
    s_in = observed_pixel_scale(metadata)
    scale_out = metadata.get("pixel_scale_arcsec")
    if sigma_in is not None and s_in is not None and scale_out is not None:
        if isinstance(sigma_in, (list, tuple)):
            sigma_in = sigma_in[0]
        flux = float(metadata.get("zero_point_flux_scale", 1.0))
        return float(sigma_in) * flux * float(scale_out) / s_in
    value = metadata.get("noise_sigma")
    if isinstance(value, (list, tuple)):
        value = value[0]
    return None if value is None else float(value)


def run_misspecification(*, model_path: str | Path, reference_datasets: Iterable[tuple[str | Path, str | Path]],
                         names: Sequence[str], images: Sequence[str], masks: Sequence[str], metadata: Sequence[str],
                         cfg: Mapping[str, Any] | None, out_path: str | Path,
                         instrument: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``misspecification`` stage: embed the reference datasets ((merged_dir, masks) pairs) and the observations,
    assess every observation (:func:`assess`) and write the record as JSON. ``instrument`` (the simulated camera,
    config ``instrument``) sets the peak count's filter width unless ``cfg["peak_smoothing"]`` does."""
    from .data.loader import MergedDataset
    from .data.observed import load_observations
    from .train import load_estimator

    cfg = {**DEFAULTS, **dict(cfg or {})}
    _, model, whitening = load_estimator(model_path)
    model = model.fused()  # type: ignore[operator]
    peak_cfg = (peak_smoothing(cfg, instrument), float(cfg["peak_threshold"]))
    feats, bkgs, stats, counts, sigma, sim_scale = [], [], [], [], None, None
    pairs = list(reference_datasets)
    per = max(1, int(cfg["max_reference"]) // max(1, len(pairs)))
    for merged_dir, masks_path in pairs:
        f, b, st, c = embed_dataset(model, whitening, merged_dir, masks_path, max_images=per,
                                    border=int(cfg["border"]), statistics=True, peaks=peak_cfg)
        feats.append(f)
        bkgs.append(b)
        stats.append(st)
        counts.append(c)
        if sigma is None:
            attrs = MergedDataset(merged_dir, masks_path).shard_attrs()
            sigma, sim_scale = simulation_sigma(attrs), simulation_pixel_scale(attrs)
    if sigma is None:
        raise ValueError("misspecification: no simulated reference dataset")
    reference = fit_reference(np.concatenate(feats))
    x, m = load_observations(list(images), list(masks))
    obs_feats = embed_images(model, whitening, x, m)
    meta = [json.loads(Path(p).read_text()) for p in metadata]
    record = assess(names=names, features=obs_feats, noise_sigmas=[observed_noise_sigma(r) for r in meta],
                    backgrounds=[border_background(img, int(cfg["border"])) for img in x], reference=reference,
                    sim_sigma=sigma, sim_backgrounds=np.concatenate(bkgs), cfg=cfg,
                    statistics=image_statistics(x, whitening),
                    statistics_reference=fit_reference(np.concatenate(stats)),
                    pixel_scales=[observed_pixel_scale(r) for r in meta], sim_pixel_scale=sim_scale,
                    peaks=peak_counts(x, sigma, *peak_cfg), peak_reference=np.concatenate(counts))
    record["peak_smoothing_pixels"] = peak_cfg[0]
    Path(out_path).write_text(json.dumps(record, indent=2) + "\n")
    return record


# ---------------------------------------------------------------------------------------------------------------
# Validation: mock observations of the training family and of perturbed instruments/sources, through the same
# mock writer and preprocessing as the DAG's observations (tests/test_misspecification.py, bench/misspecification.py).
# ---------------------------------------------------------------------------------------------------------------

#: perturbations of the mock frames against the simulations the estimator was trained on
PERTURBATIONS = ("matched", "psf", "pixel_scale", "noise", "source")


def perturbed_config(config: Mapping[str, Any], kind: str, *, population: Mapping[str, Any] | None = None,
                     cosmos_dir: str | Path | None = None, split_lists: str | Path | None = None) -> dict[str, Any]:
    """A copy of ``config`` whose mock observations differ from the simulations in one respect:

    ``matched``: none (population: ``population``, default the training dataset's); ``psf``: PSF FWHM × 2;
    ``pixel_scale``: a camera with half the pixel scale and the same PSF in pixels (FWHM in arcsec halved, as
    "1.8 Δ" cameras), frames of the same field, resampled onto the analysis grid by the preprocessing; ``noise``:
    exposure time ÷ 4 (background σ ≈ × 2); ``source``: COSMOS-format galaxy stamps (``cosmos_dir``,
    ``split_lists``) instead of Sérsic sources.
    """
    import copy

    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; allowed: {PERTURBATIONS}")
    cfg = copy.deepcopy(dict(config))
    mock = cfg["observations"]["mock"]
    mock["population"] = copy.deepcopy(dict(population or cfg["datasets"][cfg["train"]["dataset"]]["population"]))
    frame = cfg["instrument"]
    if kind == "psf":
        frame["psf"] = dict(frame["psf"], fwhm=2.0 * float(frame["psf"]["fwhm"]))
    elif kind == "pixel_scale":
        frame["pixel_scale"] = float(frame["pixel_scale"]) / 2.0
        frame["psf"] = dict(frame["psf"], fwhm=float(frame["psf"]["fwhm"]) / 2.0)
        mock["frame_num_pix"] = 2 * int(mock.get("frame_num_pix", 3 * int(frame["num_pix"])))
    elif kind == "noise":
        frame["exposure_time"] = float(frame["exposure_time"]) / 4.0
    elif kind == "source":
        if cosmos_dir is None:
            raise ValueError("the 'source' perturbation needs a COSMOS-format catalog (cosmos_dir)")
        src = cfg["lens"]["source"]
        cfg["lens"]["source"] = {"type": "cosmos", "catalog_dir": str(cosmos_dir),
                                 "center_x": src["center_x"], "center_y": src["center_y"],
                                 **({"split_lists": str(split_lists)} if split_lists else {})}
    return cfg


def preprocessed_mocks(config: Mapping[str, Any], analysis_instrument: Mapping[str, Any], n: int,
                       workdir: str | Path, *, radius_theta_e: float | None = 1.5, seed_offset: int = 0
                       ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """``n`` mock frames written by :func:`lensinfer.simulate.mock.write_mock_observations` from ``config`` and
    preprocessed onto ``analysis_instrument``'s grid (:func:`lensinfer.observe.pipeline.preprocess_observation`):
    (images (n, H, W), masks (n, H, W), the preprocessing record of each mock)."""
    from .observe.lenses import SLACS_REFERENCE_LENSES
    from .observe.pipeline import preprocess_observation
    from .simulate.mock import write_mock_observations

    cfg = dict(config, seed=int(config["seed"]) + int(seed_offset))
    base = list(SLACS_REFERENCE_LENSES)
    lenses = [base[i % len(base)] for i in range(n)]  # sky positions and names of the 13 SLACS lenses, cycled
    workdir = Path(workdir)
    raw = [workdir / "raw" / f"{i:04d}" for i in range(n)]
    write_mock_observations(cfg, lenses, raw)
    images, masks, records = [], [], []
    obs = dict(cfg["observations"], source="mock")
    for spec, folder in zip(lenses, raw):
        out = workdir / "processed" / folder.name
        meta = preprocess_observation(lens_name=spec.name, frame=folder / "science.fits", observations=obs,
                                      instrument=analysis_instrument, radius_theta_e=radius_theta_e, outdir=out)
        images.append(np.load(out / "image.npy"))
        masks.append(np.load(out / "mask.npy"))
        records.append(dict(meta))
    return np.stack(images).astype(np.float32), np.stack(masks).astype(bool), records


def flag_rates(*, estimators: Mapping[str, tuple], sim_sigma: float,
               sim_backgrounds: np.ndarray, config: Mapping[str, Any], n: int, workdir: str | Path,
               cfg: Mapping[str, Any] | None = None, conditions: Sequence[str] = PERTURBATIONS,
               populations: Mapping[str, Mapping[str, Any]] | None = None, cosmos_dir: str | Path | None = None,
               split_lists: str | Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Share of ``n`` mocks flagged per estimator and condition (:func:`perturbed_config`; ``populations`` adds
    matched-instrument conditions with other subhalo populations, e.g. the demo mocks' NFW), with the shares flagged
    by each check. ``estimators``: name → (model, whitening, embedding reference), (…, image-statistics reference)
    or (…, image-statistics reference, reference peak counts) — the last form is the DAG's check. The same mocks
    serve every estimator. The simulated camera is ``config["instrument"]`` (pixel-scale check, module docstring
    (a′); the peak count's filter width, (d))."""
    cfg = {**DEFAULTS, **dict(cfg or {})}
    peak_cfg = (peak_smoothing(cfg, config["instrument"]), float(cfg["peak_threshold"]))
    jobs = [(c, c, None) for c in conditions] + [(name, "matched", pop) for name, pop in (populations or {}).items()]
    out: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in estimators}
    for label, kind, pop in jobs:
        mock_cfg = perturbed_config(config, kind, population=pop, cosmos_dir=cosmos_dir, split_lists=split_lists)
        x, m, meta = preprocessed_mocks(mock_cfg, config["instrument"], n, Path(workdir) / label)
        sigmas, scales = [observed_noise_sigma(r) for r in meta], [observed_pixel_scale(r) for r in meta]
        backgrounds = [border_background(img, int(cfg["border"])) for img in x]
        for name, (model, whitening, reference, *rest) in estimators.items():
            stat_ref = rest[0] if rest else None
            peak_ref = rest[1] if len(rest) > 1 else None
            stats = None if stat_ref is None else image_statistics(x, whitening)
            record = assess(names=[str(i) for i in range(n)], features=embed_images(model, whitening, x, m),
                            noise_sigmas=sigmas, backgrounds=backgrounds, reference=reference, sim_sigma=sim_sigma,
                            sim_backgrounds=sim_backgrounds, cfg=cfg, statistics=stats,
                            statistics_reference=stat_ref, pixel_scales=scales,
                            sim_pixel_scale=float(config["instrument"]["pixel_scale"]),
                            peaks=None if peak_ref is None else peak_counts(x, sim_sigma, *peak_cfg),
                            peak_reference=peak_ref)
            lenses = list(record["lenses"].values())
            out[name][label] = {
                "n": n,
                "flag_rate": float(np.mean([v["flagged"] for v in lenses])),
                "flag_rate_p_value": float(np.mean([v["p_value"] < cfg["alpha"] for v in lenses])),
                # each p-value alone against alpha (the flag uses their Bonferroni combination)
                "flag_rate_embedding": float(np.mean([v["p_value_embedding"] < cfg["alpha"] for v in lenses])),
                **({"flag_rate_statistics": float(np.mean([v["p_value_statistics"] < cfg["alpha"] for v in lenses]))}
                   if stat_ref is not None else {}),
                **({"flag_rate_peaks": float(np.mean([v["p_value_peaks"] < cfg["alpha"] for v in lenses])),
                    "median_peak_count": float(np.median([v["peak_count"] for v in lenses]))}
                   if peak_ref is not None else {}),
                "flag_rate_noise": float(np.mean([any("noise" in r for r in v["reasons"]) for v in lenses])),
                "flag_rate_pixel_scale": float(np.mean([any("pixel scale" in r for r in v["reasons"])
                                                        for v in lenses])),
                "median_p_value": float(np.median([v["p_value"] for v in lenses])),
                "median_noise_ratio": float(np.median([v["noise_ratio"] for v in lenses])),
            }
    return out


def write_cosmos_test_split(folder: str | Path, n_galaxies: int) -> Path:
    """Split lists (``bad_galaxies.csv``, ``val_galaxies.csv``) putting galaxies 0..n−1 of a small COSMOS-format
    catalog in the *test* split (after :data:`lensinfer.simulate.sources.N_VAL_GALAXIES` placeholder rows), so
    mock observations (drawn from the test split) can use it."""
    from .simulate.sources import N_VAL_GALAXIES

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bad_galaxies.csv").write_text("")
    rows = [f"{i},{10_000_000 + i}" for i in range(N_VAL_GALAXIES)]
    rows += [f"{N_VAL_GALAXIES + i},{i}" for i in range(n_galaxies)]
    (folder / "val_galaxies.csv").write_text("\n".join(rows) + "\n")
    return folder
