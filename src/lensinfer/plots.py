"""Every figure of the pipeline, each a function of saved results (nothing is recomputed here)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_training", "plot_examples", "plot_observations", "plot_gamma_curves", "plot_coverage", "for_rule"]


def _save(fig: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def plot_training(history_csv: str | Path, out: str | Path) -> None:
    """Train/validation BCE per epoch (with ln 2) and the learning rate."""
    from .train import read_history

    rows = read_history(history_csv)
    epochs = [r["epoch"] + 1 for r in rows]
    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation")
    ax.axhline(np.log(2), color="gray", ls=":", label="ln 2 (chance)")
    ax.set(xlabel="epoch", ylabel="BCE", title="ratio estimator")
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
        ax.imshow(np.arcsinh(images[i] / 0.05), origin="lower", cmap="magma")
        ax.contour(masks[i].astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(f"γ={data.column('gamma_pop')[i]:.2f}  N_sub={int(data.column('n_sub')[i])}", fontsize=8)
    _save(fig, out)


def plot_observations(images: Sequence[str], masks: Sequence[str], names: Sequence[str], out: str | Path) -> None:
    """Preprocessed observations with their masks."""
    n = len(images)
    cols = min(5, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), layout="constrained", squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(np.arcsinh(np.load(images[i]) / 0.05), origin="lower", cmap="magma")
        ax.contour(np.load(masks[i]).astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
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
        plot_training(inputs.history, out)
    elif rule == "plot_examples":
        plot_examples(Path(inputs.manifest).parent, inputs.masks, params.n, out)
    elif rule == "plot_observations":
        plot_observations(list(inputs.images), list(inputs.masks), params.lenses, out)
    elif rule == "plot_gamma_curves":
        plot_gamma_curves(inputs.summary, inputs.curves, list(inputs.cdm), out)
    elif rule == "plot_coverage":
        plot_coverage(inputs.coverage, inputs.thresholds, out)
    else:
        raise ValueError(f"no figure for rule {rule!r}")
