"""Inference with the neural posterior estimator q(θ|x) (:class:`lensinfer.models.flow.FlowPosterior`).

**γ curves in the ratio format.** The NRE pipeline (spec §4) works with per-lens curves log r̂(x|γ) on the γ grid,
normalised to a maximum of 0, and combines N lenses by summing them. A posterior estimator gives
log r(x|γ) = log p(γ|x) − log π(γ) + const (Bayes), so :func:`gamma_curves` returns

    curve(γ) = log q(γ|x) − log π(γ), normalised to max 0,

with π the training γ prior (uniform → a constant; the reference prior U(1.1, 2.9)). The npz written by
:func:`dataset_curves` has the same keys as :func:`lensinfer.infer.dataset_curves` (grid, curves, gamma, n_sub), so
calibration (:mod:`lensinfer.calibrate`), the CDM tests (:func:`lensinfer.infer.infer_simulated_sets`) and the
population combination Σ_i curve_i = log[∏_i q(γ|x_i) / π(γ)^N] (:func:`lensinfer.infer.combine`, i.e. the
product of posteriors divided by π^(N−1) up to the flat prior on the grid) work unchanged.

* γ the only target (P = 1): q(γ|x) is evaluated exactly on the grid (embed once, the flow on G points).
* γ one of several targets: the γ marginal comes from ``n_samples`` posterior samples per image, as a Gaussian
  kernel density estimate on the grid (Silverman's rule-of-thumb bandwidth, at least half a grid step), with the
  samples reflected at the grid bounds (the prior edges) to remove the boundary bias; log density floored at
  −50 below the maximum so that empty regions stay finite.
* γ not a target: no curves (:class:`ValueError`).

**Posterior samples** (:func:`posterior_samples`): de-whitened draws (N, S, P) for every image of a simulated
dataset with the truths, the input of the regression metrics and TARP coverage test (``lensinfer.diagnostics``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from scipy import stats as sps

from .data.loader import ChunkShuffleLoader, MergedDataset, Whitening, noise_model_of
from .infer import grid_centres, load_observations, normalise, summarise_observations
from .models.flow import FlowPosterior
from .progress import progress

__all__ = ["load_flow", "log_prior", "gamma_curves", "kde_log_density", "dataset_curves", "posterior_samples",
           "infer_observations", "sample_images"]

GAMMA = "gamma_pop"
#: log-density floor of KDE curves below their maximum
KDE_FLOOR = -50.0


def load_flow(model_path: str | Path, device: str | torch.device = "cpu") -> tuple[FlowPosterior, Whitening]:
    """A trained posterior estimator (``kind: npe``), as its inference copy (:meth:`FlowPosterior.fused`: BatchNorm
    folded into the convolutions, channels_last), and its whitening (targets included)."""
    from .train import load_estimator

    kind, model, whitening = load_estimator(model_path, device)
    if kind != "npe":
        raise ValueError(f"{model_path} is a {kind!r} model, not a posterior estimator (npe)")
    return model.fused(), whitening  # type: ignore[union-attr]


def log_prior(spec: Any, grid: np.ndarray) -> np.ndarray:
    """log π(γ) on the grid for a prior spec of the config ({uniform|normal|truncnormal: [...]}; None = uniform)."""
    if spec is None or isinstance(spec, (int, float)):
        return np.zeros_like(grid, dtype=np.float64)
    (kind, args), = dict(spec).items()
    if kind == "uniform":
        return np.where((grid >= args[0]) & (grid <= args[1]), 0.0, -np.inf)
    if kind == "normal":
        return sps.norm.logpdf(grid, args[0], args[1])
    if kind == "truncnormal":
        mean, sd, lo, hi = args
        return sps.truncnorm.logpdf(grid, (lo - mean) / sd, (hi - mean) / sd, loc=mean, scale=sd)
    raise ValueError(f"γ prior {spec!r}: only uniform, normal and truncnormal densities are supported")


def kde_log_density(samples: np.ndarray, grid: np.ndarray, low: float, high: float) -> np.ndarray:
    """log of a reflected Gaussian KDE of 1-D samples (B, S) on the grid (G,) → (B, G) (see the module docstring)."""
    samples = np.asarray(samples, np.float64)
    b, s = samples.shape
    sd = samples.std(axis=1)
    iqr = np.subtract(*np.percentile(samples, [75, 25], axis=1)) / 1.349
    spread = np.where(iqr > 0, np.minimum(sd, iqr), sd)
    step = float(np.min(np.diff(grid))) if len(grid) > 1 else 1.0
    h = np.maximum(0.9 * spread * s ** -0.2, 0.5 * step)  # (B,)
    out = np.empty((b, len(grid)))
    for i in range(b):
        pts = np.concatenate([samples[i], 2 * low - samples[i], 2 * high - samples[i]])
        u = (grid[:, None] - pts[None, :]) / h[i]
        dens = np.exp(-0.5 * u * u).sum(axis=1) / (s * h[i] * np.sqrt(2 * np.pi))
        with np.errstate(divide="ignore"):
            logd = np.log(dens)
        out[i] = np.maximum(logd, logd.max() + KDE_FLOOR)
    return out


def _require_gamma(whitening: Whitening) -> None:
    if GAMMA not in whitening.targets:
        raise ValueError(f"the posterior estimator's targets {list(whitening.targets)} do not include {GAMMA!r}: it "
                         "gives no γ curves (train it with flow.targets containing gamma_pop)")


@torch.inference_mode()
def gamma_curves(model: FlowPosterior, whitening: Whitening, features: torch.Tensor, grid: np.ndarray, *,
                 n_samples: int = 2000, generator: torch.Generator | None = None, gamma_prior: Any = None,
                 bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Normalised curves log q(γ|x) − log π(γ) (B, G) from flow contexts (B, F) (module docstring)."""
    _require_gamma(whitening)
    targets = list(whitening.targets)
    if targets == [GAMMA]:
        theta = whitening.params(torch.as_tensor(grid, dtype=torch.float32, device=features.device)[:, None])
        theta = theta[:, None, :].expand(len(grid), features.shape[0], 1)
        logq = model.log_prob_features(theta, features).T.double().cpu().numpy() + whitening.log_det()
    else:
        j = targets.index(GAMMA)
        draws = model.sample_features(features, n_samples, generator=generator)[..., j]
        gamma = draws.double().cpu().numpy() * whitening.target_std[j] + whitening.target_mean[j]
        low, high = bounds if bounds is not None else (float(grid[0]), float(grid[-1]))
        logq = kde_log_density(gamma, grid, low, high)
    return normalise(logq - log_prior(gamma_prior, grid)[None, :])


def _features(model: FlowPosterior, loader: Iterator, device: torch.device = torch.device("cpu")
              ) -> Iterator[torch.Tensor]:
    with torch.inference_mode():
        for x, _ in loader:
            yield model.embed(x.to(device))


def _dataset_loader(data: MergedDataset, whitening: Whitening, batch_size: int) -> ChunkShuffleLoader:
    """Every image in order, with the same fixed noise realisation (noiseless storage) as the NRE curves."""
    from .seeds import torch_seed

    return ChunkShuffleLoader(data, whitening, batch_size, seed=torch_seed(0, f"curves/{data.manifest.dataset}"),
                              shuffle=False, drop_last=False, noise=noise_model_of(data))


def _grid(grid_cfg: Mapping[str, Any]) -> np.ndarray:
    return grid_centres(grid_cfg["low"], grid_cfg["high"], grid_cfg["n"])


def dataset_curves(model_path: str | Path, merged_dir: str | Path, masks_path: str | Path, grid_cfg: dict,
                   out_path: str | Path, batch_size: int = 64, *, n_samples: int = 2000, seed: int = 0,
                   gamma_prior: Any = None, device: str | torch.device = "cpu") -> np.ndarray:
    """γ curves of every image of a simulated dataset in the format of :func:`lensinfer.infer.dataset_curves`
    (npz: grid, curves (N, G) normalised, gamma, n_sub). ``gamma_prior``: the training γ prior spec (None/uniform:
    constant); ``n_samples``/``seed``: the sample-based marginal when γ is one of several targets — the workflow
    passes ``flow.n_samples``, the value the observed curves use, so that thresholds calibrated on these curves
    transfer to them. The model runs on ``device``; curves are written batch by batch and returned as a read-only
    memory map of the file (memory does not grow with the dataset)."""
    from .data.npz import NpzWriter, load_npz_lazy

    device = torch.device(device)
    model, whitening = load_flow(model_path, device)
    data = MergedDataset(merged_dir, masks_path)
    grid = _grid(grid_cfg)
    gen = torch.Generator().manual_seed(int(seed))
    bounds = (float(grid_cfg["low"]), float(grid_cfg["high"]))
    _require_gamma(whitening)  # before any output is opened
    with NpzWriter(out_path) as npz:
        npz.add("grid", grid)
        # float32 like the NRE curves (same npz format)
        with npz.stream("curves", (len(data), len(grid)), np.float32) as rows, \
                progress(len(data), f"NPE γ curves of {data.manifest.dataset}", unit="image") as bar:
            for f in _features(model, _dataset_loader(data, whitening, batch_size), device):
                rows.write(gamma_curves(model, whitening, f, grid, n_samples=n_samples, generator=gen,
                                        gamma_prior=gamma_prior, bounds=bounds))
                bar.update(len(f))
        npz.add("gamma", data.column(GAMMA))
        npz.add("n_sub", data.column("n_sub"))
    return load_npz_lazy(out_path)["curves"]


def posterior_samples(model_path: str | Path, merged_dir: str | Path, masks_path: str | Path, n_samples: int,
                      out_path: str | Path, seed: int, batch_size: int = 64, *,
                      device: str | torch.device = "cpu") -> dict[str, Any]:
    """n_samples de-whitened posterior draws of every image of a simulated dataset → npz {samples (N, S, P)
    float32, truths (N, P), columns (P,)}, written batch by batch (memory does not grow with the dataset); returns
    the same arrays (``samples`` as a read-only memory map of the file). The model runs on ``device``."""
    from .data.npz import NpzWriter, load_npz_lazy

    device = torch.device(device)
    model, whitening = load_flow(model_path, device)
    data = MergedDataset(merged_dir, masks_path)
    gen = torch.Generator().manual_seed(int(seed))
    p = len(whitening.targets)
    with NpzWriter(out_path) as npz:
        with npz.stream("samples", (len(data), int(n_samples), p), np.float32) as rows, \
                progress(len(data), f"posterior samples of {data.manifest.dataset}", unit="image") as bar:
            for f in _features(model, _dataset_loader(data, whitening, batch_size), device):
                z = model.sample_features(f, int(n_samples), generator=gen)
                rows.write(whitening.unparams(z).float().cpu().numpy())
                bar.update(len(f))
        truths = np.column_stack([data.column(t) for t in whitening.targets])
        npz.add("truths", truths)
        npz.add("columns", np.array(whitening.targets))
    return {"samples": load_npz_lazy(out_path)["samples"], "truths": truths, "columns": list(whitening.targets)}


@torch.inference_mode()
def sample_images(model: FlowPosterior, whitening: Whitening, images: np.ndarray, masks: np.ndarray,
                  n_samples: int, generator: torch.Generator | None = None, batch_size: int = 64
                  ) -> tuple[np.ndarray, torch.Tensor]:
    """(de-whitened samples (B, S, P), flow contexts (B, F)) of raw images (B, [C,] H, W) with masks (B, H, W)."""
    feats, out = [], []
    with progress(len(images), "NPE posterior samples") as bar:
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(whitening.images(images[i:i + batch_size], masks[i:i + batch_size]))
            f = model.embed(x.to(next(model.parameters()).device))
            feats.append(f)
            out.append(whitening.unparams(model.sample_features(f, n_samples, generator=generator)).float().cpu().numpy())
            bar.update(len(x))
    return np.concatenate(out), torch.cat(feats)


def infer_observations(*, model_path: str | Path, thresholds_path: str | Path | None, kde_path: str | Path | None = None,
                       names: list[str], images: list[str], masks: list[str], inference_cfg: dict,
                       out_summary: str | Path, out_curves: str | Path, out_samples: str | Path,
                       n_samples: int = 5000, seed: int = 0, gamma_prior: Any = None,
                       misspecification: dict | None = None, coverage_curves: str | Path | None = None,
                       calibrate_cfg: dict | None = None,
                       metadata: list[str] | None = None) -> dict:
    """NPE analysis of observed lenses: the outputs of :func:`lensinfer.infer.infer_observations` (summary.json with
    per-lens and combined γ MLEs/intervals, curves.csv; the same summarising code) from the curves
    log q(γ|x) − log π(γ), plus ``out_samples`` (npz: samples (N, S, P), columns, names) and, in the summary,
    the median and 16/84 % quantiles of every target per lens (``per_lens_parameters``).

    Without ``gamma_pop`` among the targets there is no γ curve: ``thresholds_path`` may then be None, the summary
    holds ``per_lens_parameters`` only (``"gamma": null``; with ``misspecification``, ``per_lens[name]`` holds just
    the ``misspecification`` entry) and ``curves.csv`` just its header. ``misspecification``, ``coverage_curves``,
    ``calibrate_cfg``: see :func:`lensinfer.infer.summarise_observations`.
    Observations off the model's training grid are refused (:func:`lensinfer.checkpoint.check_observations`,
    with the preprocessing records ``metadata``) before anything is written."""
    from .checkpoint import check_observations, load_model_file

    model, whitening = load_flow(model_path)
    grid = _grid(inference_cfg["grid"])
    x, m = load_observations(images, masks)
    notes = check_observations(model_path, load_model_file(model_path).get("grid"), whitening.n_channels, names, x,
                               metadata)
    said = {"input_notes": notes} if notes else {}  # what the guard let through, in either summary below
    gen = torch.Generator().manual_seed(int(seed))
    samples, feats = sample_images(model, whitening, x, m, int(n_samples), gen)
    np.savez(out_samples, samples=samples, columns=np.array(whitening.targets), names=np.array(names))
    q = np.percentile(samples, [16, 50, 84], axis=1)  # (3, N, P)
    params = {name: {t: {"median": float(q[1, i, j]), "q16": float(q[0, i, j]), "q84": float(q[2, i, j])}
                     for j, t in enumerate(whitening.targets)} for i, name in enumerate(names)}
    if GAMMA not in whitening.targets:
        summary = {"estimator": "npe", "n_lenses": len(names), "gamma": None, "per_lens_parameters": params, **said}
        if misspecification is not None:
            from .misspecification import summary_entry

            summary["per_lens"] = {n: {"misspecification": summary_entry(misspecification, n)} for n in names}
            summary["flagged_lenses"] = list(misspecification["flagged"])
        Path(out_summary).write_text(json.dumps(summary, indent=2) + "\n")
        Path(out_curves).write_text("gamma," + ",".join(names) + ",combined\n")
        return summary
    if thresholds_path is None:
        raise ValueError("γ inference needs the coverage thresholds (thresholds_path)")
    curves = gamma_curves(model, whitening, feats, grid, n_samples=int(n_samples), generator=gen,
                          gamma_prior=gamma_prior,
                          bounds=(float(inference_cfg["grid"]["low"]), float(inference_cfg["grid"]["high"])))
    return summarise_observations(names=names, grid=grid, curves=curves, thresholds_path=thresholds_path,
                                  kde_path=kde_path, inference_cfg=inference_cfg, out_summary=out_summary,
                                  out_curves=out_curves,
                                  extra={"estimator": "npe", "per_lens_parameters": params, **said},
                                  misspecification=misspecification, coverage_curves=coverage_curves,
                                  calibrate_cfg=calibrate_cfg, seed=seed)
