"""Every figure of the pipeline, each a function of saved results (nothing is recomputed here)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_training", "plot_examples", "plot_observations", "plot_gamma_curves", "plot_cdm_sweep", "plot_coverage", "for_rule",
           "plot_truth_vs_prediction", "plot_residuals", "plot_tarp", "plot_sbc", "plot_corner",
           "plot_estimator_comparison", "plot_derived"]


def _save(fig: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _display(image: np.ndarray, scale: float = 0.05) -> tuple[np.ndarray, str | None]:
    """What imshow shows of an image: asinh-stretched single band (H, W), or for multi-band (C, H, W) an RGB
    composite of the three reddest bands (red = last channel; Lupton et al. 2004-style asinh of each band scaled to
    its 99.5th percentile) — bands are in wavelength order in the configs (g, r, i, z)."""
    if image.ndim == 2:
        return np.arcsinh(image / scale), "magma"
    chans = image[-3:] if image.shape[0] >= 3 else np.concatenate([image, image[-1:].repeat(3 - image.shape[0], 0)])
    rgb = np.arcsinh(np.clip(chans, 0, None) / np.maximum(np.percentile(chans, 99.5, axis=(1, 2), keepdims=True),
                                                          1e-12) * 3.0) / np.arcsinh(3.0)
    return np.clip(rgb[::-1].transpose(1, 2, 0), 0, 1), None


def _show(ax: Any, image: np.ndarray, mask: np.ndarray) -> None:
    shown, cmap = _display(image)
    ax.imshow(shown, origin="lower", cmap=cmap)
    if not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)


def plot_training(history_csv: str | Path, out: str | Path, kind: str = "nre") -> None:
    """Train/validation loss per epoch and the learning rate: BCE with its chance level ln 2 for the ratio estimator
    (``kind="nre"``), −log q(θ|x) for the flow posterior (``kind="npe"``)."""
    from .train import read_history

    rows = read_history(history_csv)
    epochs = [r["epoch"] + 1 for r in rows]
    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation")
    flow = kind == "npe"
    if not flow:
        ax.axhline(np.log(2), color="gray", ls=":", label="ln 2 (chance)")
    ax.set(xlabel="epoch", ylabel="−log q(θ|x)" if flow else "BCE",
           title="flow posterior (NPE)" if flow else "ratio estimator (NRE)")
    ax.legend()
    ax_lr.semilogy(epochs, [r["lr"] for r in rows], "o-")
    ax_lr.set(xlabel="epoch", ylabel="learning rate")
    _save(fig, out)


def plot_examples(merged_dir: str | Path, masks_path: str | Path, n: int, out: str | Path) -> None:
    """The first ``n`` images of a dataset with their mask outline, γ and N_sub."""
    from .data.loader import MergedDataset

    data = MergedDataset(merged_dir, masks_path)
    n = min(n, len(data))
    images, masks = data.read(np.arange(n))
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), layout="constrained", squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        _show(ax, images[i], masks[i])
        ax.set_title(f"γ={data.column('gamma_pop')[i]:.2f}  N_sub={int(data.column('n_sub')[i])}", fontsize=8)
    _save(fig, out)


def plot_observations(images: Sequence[str], masks: Sequence[str], names: Sequence[str], out: str | Path,
                      misspecification: Sequence[str] = ()) -> None:
    """Preprocessed observations with their masks; lenses flagged by the misspecification check
    (``misspecification``: the ``misspecification.json`` of each estimator) get a red frame and the reason."""
    import json

    checks = {Path(p).parent.name: json.loads(Path(p).read_text()) for p in misspecification}  # {est: record}
    n = len(images)
    cols = min(5, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), layout="constrained", squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        _show(ax, np.load(images[i]), np.load(masks[i]))
        flagged_by = [est for est, rec in checks.items() if rec["lenses"].get(names[i], {}).get("flagged")]
        if flagged_by:
            lens = checks[flagged_by[0]]["lenses"][names[i]]
            pixels = lens.get("pixel_scale_ratio", float("nan"))
            ax.set_title(f"{names[i]}\nFLAGGED ({', '.join(flagged_by)}): p={lens['p_value']:.2g}, "
                         f"σ ratio {lens['noise_ratio']:.2f}"
                         + (f", pixels ×{pixels:.2f}" if any("pixel scale" in r for r in lens["reasons"]) else "")
                         + (f", {lens.get('peak_count')} peaks" if any(r.startswith("peak-count")
                                                                        for r in lens["reasons"]) else ""),
                         fontsize=7, color="red")
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(color="red", linewidth=3)
        else:
            ax.set_title(names[i], fontsize=8)
    _save(fig, out)


def plot_gamma_curves(summary_json: str | Path, curves_csv: str | Path, cdm_jsons: Sequence[str], out: str | Path) -> None:
    """Per-lens and combined −2Δlog r̂(γ) with the combined MLE, its 68 % interval and the CDM MLE bands."""
    summary = json.loads(Path(summary_json).read_text())
    with open(curves_csv) as fh:
        reader = csv.reader(fh)
        header = next(reader)
        table = np.array([[float(v) for v in row] for row in reader])
    grid = table[:, 0]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for j, name in enumerate(header[1:-1], start=1):
        ax.plot(grid, -2 * table[:, j], lw=0.8, alpha=0.6)
    ax.plot(grid, -2 * table[:, -1], color="k", lw=2.2, label=f"combined ({summary['n_lenses']} lenses)")
    comb = summary["combined"]
    ax.axvline(comb["mle"], color="k", ls="--", lw=1)
    iv = comb["intervals"].get("0.68", {})
    band = iv.get("recalibrated", iv.get("nominal"))
    if band:
        ax.axvspan(band["low"], band["high"], color="k", alpha=0.12, label="68 % interval")
    for k, path in enumerate(cdm_jsons):
        cdm = json.loads(Path(path).read_text())
        pct = cdm["mle_percentiles"]
        ax.axvspan(pct["16"], pct["84"], color=f"C{k + 3}", alpha=0.2,
                   label=f"{Path(path).stem.removeprefix('cdm_')}: 16–84 % of {cdm['set_size']}-lens MLEs")
    ax.set(xlabel="γ (subhalo population slope)", ylabel="−2 Δ log r̂", ylim=(0, max(12.0, 1.0)))
    ax.legend(fontsize=8, loc="upper right")
    _save(fig, out)


def plot_cdm_sweep(cdm_jsons: Sequence[str], sweep: Sequence[Mapping[str, Any]], out: str | Path) -> None:
    """13-lens MLE band (16–84 % of the MLEs of disjoint sets, median) of the CDM test sets against the concentration
    multiplier, per profile, with the paper's values (:data:`lensinfer.reference.CDM_SWEEP`) as reference points.

    ``sweep`` rows (:func:`lensinfer.config.expand_cdm_sweep`) give each JSON's profile and multiplier, in order.
    """
    from .reference import CDM_SWEEP, HST_COMBINED

    if len(cdm_jsons) != len(sweep):
        raise ValueError(f"plot_cdm_sweep: {len(cdm_jsons)} result files for {len(sweep)} sweep datasets")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    ax.axhspan(HST_COMBINED["low"], HST_COMBINED["high"], color="0.85", zorder=0,
               label="HST, 13 lenses, 68 % (paper)")
    profiles = sorted({str(r["profile"]) for r in sweep})
    for k, profile in enumerate(profiles):
        rows = sorted((float(r["c_factor"]), json.loads(Path(path).read_text()))
                      for path, r in zip(cdm_jsons, sweep) if r["profile"] == profile)
        c = np.array([row[0] for row in rows])
        pct = np.array([[row[1]["mle_percentiles"][q] for q in ("16", "50", "84")] for row in rows])
        n_sets = min(int(row[1]["n_sets"]) for row in rows)
        size = rows[0][1]["set_size"]
        color = f"C{k}"
        if len(c) > 1:
            ax.fill_between(c, pct[:, 0], pct[:, 2], color=color, alpha=0.25, lw=0)
        ax.errorbar(c, pct[:, 1], yerr=[pct[:, 1] - pct[:, 0], pct[:, 2] - pct[:, 1]], color=color, marker="o",
                    ms=4, capsize=2, label=f"{profile}: this run (median, 16–84 % of {size}-lens MLEs, ≥ {n_sets} sets)")
        paper = CDM_SWEEP.get(profile)
        if paper:
            pc = np.array(sorted(paper))
            pv = np.array([paper[x] for x in pc])
            ax.errorbar(pc * 1.04, pv[:, 0], yerr=[pv[:, 0] - pv[:, 1], pv[:, 2] - pv[:, 0]], color=color, ls="none",
                        marker="s", mfc="white", ms=4, capsize=2, label=f"{profile}: paper (median, 16–84 %)")
    ax.set_xscale("log")
    ax.set_xticks([0.4, 0.6, 1, 2, 4, 6, 10], labels=["0.4", "0.6", "1", "2", "4", "6", "10"])
    ax.set(xlabel="concentration multiplier c_factor (× DM14)", ylabel="γ MLE of 13-lens sets")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, out)


def plot_coverage(coverage_csv: str | Path, thresholds_json: str | Path, out: str | Path) -> None:
    """Expected coverage vs nominal level per set size N: Wilks intervals (dashed) and the reported,
    coverage-recalibrated intervals (solid; thresholds fitted on the other fold of γ values)."""
    with open(coverage_csv) as fh:
        rows = list(csv.DictReader(fh))
    thresholds = json.loads(Path(thresholds_json).read_text())
    fig, ax = plt.subplots(figsize=(4.8, 4.4), layout="constrained")
    for size in sorted({int(r["set_size"]) for r in rows}):
        sel = [r for r in rows if int(r["set_size"]) == size]
        nominal = [float(r["nominal"]) for r in sel]
        entry = thresholds["set_sizes"][str(size)]
        (line,) = ax.plot(nominal, [float(r["empirical"]) for r in sel], ls="--", lw=1,
                          label=f"N = {size}, Wilks χ²₁ thresholds")
        if "recalibrated_crossfit" in sel[0]:
            cross = entry["coverage_recalibrated_crossfit"]
            ax.plot(nominal, [float(r["recalibrated_crossfit"]) for r in sel], color=line.get_color(),
                    label=f"N = {size}, recalibrated (68 %: {cross.get('0.68', float('nan')):.2f}, "
                          f"95 %: {cross.get('0.95', float('nan')):.2f})")
    ax.plot([0, 1], [0, 1], color="gray", ls=":")
    ax.set(xlabel="nominal level", ylabel="empirical coverage (held-out sets)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, out)


def for_rule(rule: str, inputs: Any, params: Any, out: str) -> None:
    """Dispatch of the plot rules (``workflow/scripts/plot.py``)."""
    if rule == "plot_training":
        plot_training(inputs.history, out, kind=Path(out).parent.name)  # results/plots/{est}/training.png
    elif rule == "plot_examples":
        plot_examples(Path(inputs.manifest).parent, inputs.masks, params.n, out)
    elif rule == "plot_observations":
        plot_observations(list(inputs.images), list(inputs.masks), params.lenses, out,
                          misspecification=list(getattr(inputs, "misspecification", [])))
    elif rule == "plot_gamma_curves":
        plot_gamma_curves(inputs.summary, inputs.curves, list(inputs.cdm), out)
    elif rule == "plot_cdm_sweep":
        plot_cdm_sweep(list(inputs.cdm), list(params.sweep), out)
    elif rule == "plot_coverage":
        plot_coverage(inputs.coverage, inputs.thresholds, out)
    elif rule == "plot_npe_samples":
        figure = Path(out).stem
        if figure in ("truth_vs_prediction", "residuals"):
            {"truth_vs_prediction": plot_truth_vs_prediction, "residuals": plot_residuals}[figure](inputs.samples, out)
        elif figure == "tarp":
            plot_tarp(inputs.diagnostics, out)
        elif figure == "sbc":
            plot_sbc(inputs.diagnostics, out)
        elif figure == "corner":
            plot_corner(inputs.samples, range(int(params.n_corner)), out)
        else:
            raise ValueError(f"no NPE figure named {figure!r}")
    elif rule == "plot_estimator_comparison":
        plot_estimator_comparison(inputs.nre, inputs.npe, out)
    elif rule == "plot_derived":
        plot_derived(inputs.derived, out)
    else:
        raise ValueError(f"no figure for rule {rule!r}")


# ---------------------------------------------------------------------------------------------------------------
# Posterior (NPE) diagnostics and derived quantities (issue #7): functions of saved sample / diagnostics files.
# ---------------------------------------------------------------------------------------------------------------

#: axis labels of the simulator's parameter columns (others are shown by name)
PARAM_LABELS: dict[str, str] = {
    "lens_theta_E": r"$\theta_E$ [″]", "lens_gamma": r"$\gamma_{\rm EPL}$", "lens_e1": r"$e_1$", "lens_e2": r"$e_2$",
    "lens_center_x": r"$x_{\rm lens}$ [″]", "lens_center_y": r"$y_{\rm lens}$ [″]",
    "shear_gamma1": r"$\gamma_1^{\rm ext}$", "shear_gamma2": r"$\gamma_2^{\rm ext}$", "gamma_pop": r"$\gamma_{\rm pop}$",
    "source_center_x": r"$x_{\rm src}$ [″]", "source_center_y": r"$y_{\rm src}$ [″]", "z_lens": r"$z_l$",
    "z_source": r"$z_s$", "multipole3_a": r"$a_3$", "multipole4_a": r"$a_4$", "multipole3_phi": r"$\phi_3$",
    "multipole4_phi": r"$\phi_4$",
}


def _label(col: str) -> str:
    return PARAM_LABELS.get(col, col)


def _save_any(fig: Any, path: str | Path) -> None:
    """:func:`_save`, with reproducible metadata also for PDF output."""
    if Path(path).suffix.lower() == ".pdf":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, metadata={"Creator": None, "Producer": None, "CreationDate": None})
        plt.close(fig)
    else:
        _save(fig, path)


def _panel_grid(n: int, max_cols: int = 4, size: tuple[float, float] = (3.0, 2.8)) -> tuple[Any, np.ndarray]:
    cols = max(1, min(max_cols, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), layout="constrained",
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat[:n]


def _posterior_file(samples_npz: str | Path, columns: Sequence[str] | None) -> tuple[Any, list[int]]:
    from .diagnostics import load_posterior_samples

    post = load_posterior_samples(samples_npz)
    idx = list(range(len(post.columns))) if columns is None else [post.columns.index(c) for c in columns]
    return post, idx


def _finite_truth_lenses(post: Any) -> np.ndarray:
    return np.all(np.isfinite(post.truths), axis=1)


def _posterior_metrics(samples_npz: str | Path, columns: Sequence[str] | None
                       ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, dict[str, Any]]:
    """(samples, truths, columns, 16/50/84 % quantiles, regression metrics) of the lenses with finite truths."""
    from .diagnostics import posterior_quantiles, regression_metrics

    post, idx = _posterior_file(samples_npz, columns)
    ok = _finite_truth_lenses(post)
    samples, truths = post.samples[ok][:, :, idx], post.truths[ok][:, idx]
    cols = [post.columns[j] for j in idx]
    q = posterior_quantiles(samples)
    return samples, truths, cols, q, regression_metrics(samples, truths, cols, quantiles=q)


def plot_truth_vs_prediction(samples_npz: str | Path, out: str | Path, *, columns: Sequence[str] | None = None,
                             max_points: int = 1000, seed: int = 0) -> None:
    """Posterior median ± 1σ (16–84 %) against the truth, one panel per parameter, with the 1:1 line and R²
    (of all lenses; at most ``max_points`` random lenses are drawn)."""
    samples, truths, cols, q, metrics = _posterior_metrics(samples_npz, columns)
    n = truths.shape[0]
    show = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_points), replace=False))
    fig, axes = _panel_grid(len(cols))
    for j, (ax, col) in enumerate(zip(axes, cols)):
        t, lo, med, hi = truths[show, j], q[0, show, j], q[1, show, j], q[2, show, j]
        ax.errorbar(t, med, yerr=[med - lo, hi - med], fmt="o", ms=2, lw=0.5, alpha=0.5, color="C0", ecolor="C0")
        lims = [min(t.min(), lo.min()), max(t.max(), hi.max())]
        ax.plot(lims, lims, color="k", ls="--", lw=1)
        r2 = metrics[col]["r2"]
        ax.set(xlabel=f"true {_label(col)}", ylabel=f"predicted {_label(col)}",
               title=f"R² = {r2:.3f}" if np.isfinite(r2) else "R² undefined (constant truth)")
    fig.suptitle(f"posterior median ± 1σ vs truth ({n} lenses{'' if len(show) == n else f', {len(show)} shown'})",
                 fontsize=10)
    _save_any(fig, out)


def plot_residuals(samples_npz: str | Path, out: str | Path, *, columns: Sequence[str] | None = None,
                   n_bins: int = 10, max_points: int = 2000, seed: int = 0) -> None:
    """Residual (posterior median − truth) against the truth per parameter, with the running median and
    16–84 % band of the residuals in ``n_bins`` truth bins, and the bias and 1σ scatter in the title."""
    samples, truths, cols, q, metrics = _posterior_metrics(samples_npz, columns)
    resid = q[1] - truths
    n = truths.shape[0]
    show = np.random.default_rng(seed).choice(n, size=min(n, max_points), replace=False)
    fig, axes = _panel_grid(len(cols))
    for j, (ax, col) in enumerate(zip(axes, cols)):
        t, r = truths[:, j], resid[:, j]
        ax.plot(t[show], r[show], ".", ms=2, alpha=0.3, color="C0")
        ax.axhline(0.0, color="k", lw=1, ls="--")
        if t.max() > t.min():
            edges = np.quantile(t, np.linspace(0, 1, n_bins + 1))
            which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_bins - 1)
            centres, p16, p50, p84 = [], [], [], []
            for b in range(n_bins):
                sel = which == b
                if sel.sum() >= 3:
                    centres.append(np.median(t[sel]))
                    a, m, c = np.percentile(r[sel], [16, 50, 84])
                    p16.append(a)
                    p50.append(m)
                    p84.append(c)
            ax.plot(centres, p50, color="C3", lw=1.5)
            ax.fill_between(centres, p16, p84, color="C3", alpha=0.25, lw=0)
        mt = metrics[col]
        ax.set(xlabel=f"true {_label(col)}", ylabel="median − truth",
               title=f"bias {mt['bias']:+.3g}, σ {mt['scatter_68']:.3g}")
        ax.title.set_fontsize(9)
    fig.suptitle(f"residuals of the posterior median ({n} lenses; red: binned median and 16–84 %)", fontsize=10)
    _save_any(fig, out)


def plot_tarp(diagnostics_json: str | Path, out: str | Path) -> None:
    """TARP expected coverage probability against the credibility level α (Lemos et al. 2023), with the
    diagonal of a calibrated posterior and the bootstrap band (68 % and 95 %) if the JSON has one.

    ``diagnostics_json``: the :func:`lensinfer.diagnostics.write_diagnostics` output (or a JSON of a bare
    :func:`lensinfer.diagnostics.tarp_test` result)."""
    blob = json.loads(Path(diagnostics_json).read_text())
    res = blob.get("tarp", blob)
    alpha, ecp = np.asarray(res["alpha"], float), np.asarray(res["ecp"], float)
    fig, ax = plt.subplots(figsize=(4.6, 4.4), layout="constrained")
    boot = res.get("bootstrap")
    if boot:
        ax.fill_between(alpha, boot["ecp_p2.5"], boot["ecp_p97.5"], color="C0", alpha=0.15, lw=0,
                        label=f"95 % bootstrap ({boot['n']})")
        ax.fill_between(alpha, boot["ecp_p16"], boot["ecp_p84"], color="C0", alpha=0.3, lw=0, label="68 % bootstrap")
    ax.plot(alpha, ecp, color="C0", lw=2, label="TARP")
    ax.plot([0, 1], [0, 1], color="k", ls="--", lw=1, label="calibrated")
    dims = res.get("dims", [])
    ax.set(xlabel="credibility level α", ylabel="expected coverage", xlim=(0, 1), ylim=(0, 1),
           title=f"max |ECP − α| = {res['max_dev']:.3f}"
                 + (f", KS p = {res['ks_pvalue']:.2g}" if "ks_pvalue" in res else ""))
    ax.title.set_fontsize(9)
    ax.text(0.98, 0.02, f"{res.get('n_sims', '?')} lenses × {res.get('n_samples', '?')} samples\n{len(dims)} parameters",
            transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
    ax.legend(fontsize=7, loc="upper left")
    _save_any(fig, out)


def plot_sbc(source: str | Path | np.ndarray, out: str | Path, *, n_samples: int | None = None,
             columns: Sequence[str] | None = None, n_bins: int | None = None, band: float = 0.99) -> None:
    """SBC rank histograms (Talts et al. 2018) with the expected count and its central ``band`` binomial band.

    ``source``: a posterior-sample ``.npz`` (ranks computed here), a diagnostics ``.json`` (its stored
    histograms), or an (N, P) integer rank array (then ``n_samples`` is required)."""
    from .diagnostics import load_posterior_samples, sbc_histogram, sbc_ranks, sbc_uniformity

    pvals: dict[str, dict[str, float]] = {}
    if isinstance(source, np.ndarray):
        if n_samples is None:
            raise ValueError("plot_sbc: ranks need n_samples")
        ranks = source if source.ndim == 2 else source[:, None]
        cols = list(columns) if columns is not None else [f"p{j}" for j in range(ranks.shape[1])]
        hist = sbc_histogram(ranks, n_samples, n_bins, band)
        pvals = sbc_uniformity(ranks, n_samples, columns=cols, n_bins=n_bins)
        n_lenses = ranks.shape[0]
    elif Path(source).suffix == ".json":
        blob = json.loads(Path(source).read_text())
        hist, pvals, cols = blob["sbc"]["histogram"], blob["sbc"]["uniformity"], list(blob["columns"])
        n_samples, n_lenses = int(blob["n_samples"]), int(blob["n_lenses"])
    else:
        post = load_posterior_samples(source)
        ok = _finite_truth_lenses(post)
        ranks = sbc_ranks(post.samples[ok], post.truths[ok])
        cols, n_samples, n_lenses = post.columns, post.n_samples, int(ok.sum())
        hist = sbc_histogram(ranks, n_samples, n_bins, band)
        pvals = sbc_uniformity(ranks, n_samples, columns=cols, n_bins=n_bins)
    edges = np.asarray(hist["edges"], float) / (n_samples + 1.0)
    counts = np.asarray(hist["counts"], float)
    fig, axes = _panel_grid(len(cols), size=(2.8, 2.3))
    for j, (ax, col) in enumerate(zip(axes, cols)):
        ax.fill_between(edges, np.append(hist["band_low"], hist["band_low"][-1]),
                        np.append(hist["band_high"], hist["band_high"][-1]), step="post", color="0.8", lw=0,
                        label=f"{round(100 * hist['band'])} % band")
        ax.stairs(hist["expected"], edges, color="k", lw=0.8, ls="--", baseline=None)
        ax.stairs(counts[j], edges, color="C0", lw=1.5, baseline=None)
        pv = pvals.get(col, {})
        ax.set(xlabel=f"normalised rank of {_label(col)}", ylabel="lenses", xlim=(0, 1),
               title=f"χ² p = {pv.get('chi2_pvalue', float('nan')):.2g}, KS p = {pv.get('ks_pvalue', float('nan')):.2g}")
        ax.title.set_fontsize(8)
    fig.suptitle(f"SBC ranks ({n_lenses} lenses, {n_samples} samples each, {hist['n_bins']} bins)", fontsize=10)
    _save_any(fig, out)


def plot_corner(samples_npz: str | Path, indices: Sequence[int], out: str | Path, *,
                columns: Sequence[str] | None = None, max_samples: int = 3000, seed: int = 0,
                max_cols: int = 2) -> None:
    """Corner plots (``corner`` package) of the posteriors of a few lenses with their truths marked.

    PNG/SVG output: one figure with a grid of corner plots (``max_cols`` per row), one per lens; ``.pdf``
    output: one page per lens. At most ``max_samples`` random samples per lens are drawn."""
    import corner

    post, idx = _posterior_file(samples_npz, columns)
    cols = [post.columns[j] for j in idx]
    labels = [_label(c) for c in cols]
    rng = np.random.default_rng(seed)
    indices = [int(i) for i in indices]
    k = len(cols)

    def draw(target: Any, i: int) -> None:
        s = post.samples[i][:, idx].astype(float)
        if s.shape[0] > max_samples:
            s = s[rng.choice(s.shape[0], size=max_samples, replace=False)]
        truth = post.truths[i, idx]
        const = np.ptp(s, axis=0) == 0
        rng_ = [(v - 0.5, v + 0.5) if c else (np.quantile(s[:, j], 0.001), np.quantile(s[:, j], 0.999))
                for j, (v, c) in enumerate(zip(s[0], const))]
        for j, tv in enumerate(truth):  # keep the truth inside the panel
            if np.isfinite(tv):
                lo, hi = rng_[j]
                pad = 0.05 * (hi - lo)
                rng_[j] = (min(lo, tv - pad), max(hi, tv + pad))
        one_d = s.shape[1] == 1  # corner 2.3.0 cannot overplot truths on a single panel: drawn here instead
        corner.corner(s, fig=target, labels=labels, range=rng_,
                      truths=None if one_d else np.where(np.isfinite(truth), truth, None),
                      truth_color="C3", plot_datapoints=False, smooth=1.0, max_n_ticks=3, quantiles=[0.16, 0.5, 0.84],
                      label_kwargs={"fontsize": 9}, labelpad=0.15)
        if one_d and np.isfinite(truth[0]):
            target.axes[0].axvline(truth[0], color="C3")
        for ax in target.axes:
            ax.tick_params(labelsize=6)
        target.suptitle(f"{post.names[i]}  (truth in red)", fontsize=10)

    dim = 1.1 * k + 0.8
    if Path(out).suffix.lower() == ".pdf":
        from matplotlib.backends.backend_pdf import PdfPages

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with PdfPages(out, metadata={"Creator": None, "Producer": None, "CreationDate": None}) as pdf:
            for i in indices:
                fig = plt.figure(figsize=(dim, dim))
                draw(fig, i)
                pdf.savefig(fig)
                plt.close(fig)
        return
    ncol = max(1, min(max_cols, len(indices)))
    nrow = -(-len(indices) // ncol)
    fig = plt.figure(figsize=(dim * ncol, dim * nrow))
    subs = np.atleast_1d(fig.subfigures(nrow, ncol, squeeze=False)).ravel()
    for sf, i in zip(subs, indices):
        draw(sf, i)
    _save(fig, out)


def _read_curves(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with open(path) as fh:
        reader = csv.reader(fh)
        header = next(reader)
        table = np.array([[float(v) for v in row] for row in reader if row])
    return table[:, 0], {name: table[:, j] for j, name in enumerate(header[1:], start=1)}


def plot_estimator_comparison(nre_curves_csv: str | Path, npe_curves_csv: str | Path, out: str | Path, *,
                              max_cols: int = 5) -> None:
    """NRE and NPE γ curves per lens and combined, overlaid (one panel per lens, the combination last).

    Both CSVs have the :func:`lensinfer.infer.infer_observations` layout: ``gamma,<lens names…>,combined``, values
    normalised log-curves (max 0); shown as exp(Δ log) (peak 1). Lenses present in only one file are drawn with
    that estimator alone; each estimator keeps its own γ grid."""
    g_nre, nre = _read_curves(nre_curves_csv)
    g_npe, npe = _read_curves(npe_curves_csv)
    names = [n for n in nre if n != "combined"] + [n for n in npe if n != "combined" and n not in nre] + ["combined"]
    fig, axes = _panel_grid(len(names), max_cols=max_cols, size=(2.6, 2.2))
    for ax, name in zip(axes, names):
        for grid, curves, lab, color in ((g_nre, nre, "NRE", "C0"), (g_npe, npe, "NPE", "C1")):
            if name in curves:
                c = curves[name]
                ax.plot(grid, np.exp(c - np.max(c)), color=color, lw=2 if name == "combined" else 1.3, label=lab)
                ax.axvline(grid[np.argmax(c)], color=color, lw=0.7, ls=":")
        ax.set(title=name, xlabel="γ", ylim=(0, 1.05))
        ax.title.set_fontsize(9 if name != "combined" else 10)
        if name == "combined":
            ax.title.set_fontweight("bold")
    axes[0].set_ylabel("exp(Δ log)")
    axes[0].legend(fontsize=7)
    _save_any(fig, out)


def plot_derived(derived_json: str | Path, out: str | Path, *, max_lenses: int = 4) -> None:
    """Image positions (samples, medians with 1σ error ellipses and 16–84 % crosses, truth ×) and the
    time-delay posteriors relative to image A, one row per lens (:func:`lensinfer.derived.write_derived` output,
    or a single :func:`lensinfer.derived.derived_quantities` result)."""
    from matplotlib.patches import Ellipse

    blob = json.loads(Path(derived_json).read_text())
    lenses = blob["lenses"] if "lenses" in blob else {"lens": blob}
    names = list(lenses)[:max_lenses]
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 4.0 * len(names)), layout="constrained", squeeze=False)
    letters = "ABCDEFGH"
    for (ax_pos, ax_dt), name in zip(axes, names):
        res = lenses[name]
        mult = res["multiplicity"]
        imgs = res["images"]
        smp = res.get("samples", {})
        truth = res.get("truth")
        for i, im in enumerate(imgs):
            color = f"C{i}"
            xs = np.asarray(smp.get("x", []), float)
            if xs.size:
                ax_pos.plot(xs[:, i], np.asarray(smp["y"], float)[:, i], ".", ms=1.5, alpha=0.25, color=color)
            x, y = im["x"], im["y"]
            ax_pos.errorbar(x["median"], y["median"], xerr=[[x["median"] - x["p16"]], [x["p84"] - x["median"]]],
                            yerr=[[y["median"] - y["p16"]], [y["p84"] - y["median"]]], fmt="o", ms=4, color=color,
                            lw=1, label=letters[i] if i < len(letters) else str(i))
            cov = np.asarray(im["cov_xy"], float)
            if cov.shape == (2, 2) and np.all(np.isfinite(cov)) and np.trace(cov) > 0:
                vals, vecs = np.linalg.eigh(cov)
                vals = np.clip(vals, 0, None)
                angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
                ax_pos.add_patch(Ellipse((x["median"], y["median"]), 2 * np.sqrt(vals[1]), 2 * np.sqrt(vals[0]),
                                         angle=angle, fill=False, color=color, lw=1))
            ax_pos.annotate(letters[i] if i < len(letters) else str(i), (x["median"], y["median"]),
                            textcoords="offset points", xytext=(5, 5), fontsize=9, color=color)
            if i > 0:
                dts = np.asarray(smp.get("dt_days", []), float)
                if dts.size:
                    ax_dt.hist(dts[:, i], bins=int(np.clip(dts.shape[0] // 15, 10, 40)), histtype="step",
                               color=color, lw=1.3, density=True,
                               label=f"Δt_{letters[i]}A = {im['dt_days']['median']:.2f}"
                                     f"$^{{+{im['dt_days']['p84'] - im['dt_days']['median']:.2f}}}"
                                     f"_{{-{im['dt_days']['median'] - im['dt_days']['p16']:.2f}}}$ d")
                else:
                    d = im["dt_days"]
                    ax_dt.errorbar([d["median"]], [i], xerr=[[d["median"] - d["p16"]], [d["p84"] - d["median"]]],
                                   fmt="o", color=color, label=f"Δt_{letters[i]}A")
        if truth and truth.get("n_images") == len(imgs):
            ax_pos.plot(truth["x"], truth["y"], "kx", ms=7, mew=1.5, label="truth")
            for i, d in enumerate(truth["dt_days"][1:], start=1):
                ax_dt.axvline(d, color=f"C{i}", ls="--", lw=1)
        ax_pos.set_aspect("equal", adjustable="datalim")
        ax_pos.set(xlabel="x [″]", ylabel="y [″]",
                   title=f"{name}: {mult['reference']} images in "
                         f"{100 * mult['fractions'].get(str(mult['reference']), 0):.0f} %"
                         f" of {res['n_samples_used']} samples")
        ax_pos.title.set_fontsize(9)
        ax_pos.legend(fontsize=7, loc="best")
        zl, zs = res.get("z_lens"), res.get("z_source")
        ax_dt.set(xlabel="time delay relative to image A [days]", ylabel="posterior density",
                  title=f"D_Δt = {res['time_delay_distance_mpc']:.0f} Mpc"
                        + (f" (z_l = {zl:.3f}, z_s = {zs:.3f})" if isinstance(zl, float) and isinstance(zs, float) else ""))
        ax_dt.title.set_fontsize(9)
        if len(imgs) > 1:
            ax_dt.legend(fontsize=7)
        other = {k: v for k, v in mult["fractions"].items() if int(k) != mult["reference"]}
        if other:
            ax_pos.text(0.02, 0.02, "excluded: " + ", ".join(f"{k} images {100 * v:.1f} %" for k, v in other.items()),
                        transform=ax_pos.transAxes, fontsize=7)
    _save_any(fig, out)

