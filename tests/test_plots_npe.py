"""Figures of the posterior diagnostics and derived quantities (new functions of lensinfer.plots), from small
synthetic inputs: each writes its file, and what it draws (captured from the figure before it is saved) is checked
against the inputs — panels per parameter or lens, the plotted values, the titles' statistics."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lensinfer import plots

COLS = ["lens_theta_E", "lens_gamma", "shear_gamma1", "source_center_x"]

pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning"),
              pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyDeprecationWarning")]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from lensinfer.derived import write_derived
    from lensinfer.diagnostics import write_diagnostics

    d = tmp_path_factory.mktemp("npe_plots")
    rng = np.random.default_rng(0)
    n, s = 60, 150
    lo, hi = np.array([0.9, 1.8, -0.05, -0.05]), np.array([1.3, 2.2, 0.05, 0.05])
    sig = (hi - lo) * 0.05
    mu = rng.uniform(lo, hi, (n, 4))
    truths = mu + sig * rng.standard_normal((n, 4))
    samples = (mu[:, None] + sig * rng.standard_normal((n, s, 4))).astype(np.float32)
    post = d / "posterior.npz"
    np.savez(post, samples=samples, truths=truths, columns=np.array(COLS), names=np.array([f"sim{i}" for i in range(n)]))
    diag = d / "diagnostics.json"
    write_diagnostics(post, diag, seed=0, n_bootstrap=20)
    derived = d / "derived.json"
    write_derived(post, derived, z_lens=0.2, z_source=0.6, indices=[0, 1], max_samples=60,
                  fixed={"source_center_y": 0.02})
    grid = np.linspace(1.1, 2.9, 30)
    curves = {}
    for name, shift in (("nre", 0.0), ("npe", 0.1)):
        path = d / f"{name}_curves.csv"
        per = np.array([-(grid - 1.8 - shift - 0.2 * k) ** 2 / 0.08 for k in range(2)])
        comb = per.sum(0) - per.sum(0).max()
        rows = ["gamma,J0946+1006,J1630+4520,combined"] + [
            f"{g:.6f},{a:.6f},{b:.6f},{c:.6f}" for g, a, b, c in zip(grid, per[0], per[1], comb)]
        path.write_text("\n".join(rows) + "\n")
        curves[name] = path
    return {"post": post, "diag": diag, "derived": derived, "nre": curves["nre"], "npe": curves["npe"], "dir": d}


def _ok(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 1000


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures lensinfer.plots saves, in order (kept after saving for inspection)."""
    figures: list = []
    for name in ("_save", "_save_any"):
        real = getattr(plots, name)

        def keep(fig, path, _real=real):
            figures.append(fig)
            _real(fig, path)

        monkeypatch.setattr(plots, name, keep)
    return figures


def _data_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.has_data()]


def _posterior(files):
    blob = np.load(files["post"])
    return blob["samples"].astype(float), blob["truths"]


def test_truth_vs_prediction_and_residuals(files, drawn):
    samples, truths = _posterior(files)
    median = np.median(samples, axis=1)
    out = files["dir"] / "tvp.png"
    plots.plot_truth_vs_prediction(files["post"], out)
    _ok(out)
    axes = _data_axes(drawn[-1])
    assert len(axes) == len(COLS)  # one panel per parameter
    for j, ax in enumerate(axes):
        x, y = ax.lines[0].get_data()  # the errorbar markers: truth → posterior median
        order = np.argsort(truths[:, j])
        np.testing.assert_allclose(np.sort(x), truths[order, j])
        np.testing.assert_allclose(np.asarray(y)[np.argsort(x)], median[order, j], rtol=1e-4)
        r2 = float(ax.get_title().split("=")[1])  # informative synthetic posteriors (σ = 5 % of the prior range)
        assert 0.9 < r2 <= 1.0, ax.get_title()
    out = files["dir"] / "resid.png"
    plots.plot_residuals(files["post"], out, columns=COLS[:2])
    _ok(out)
    axes = _data_axes(drawn[-1])
    assert len(axes) == 2
    for j, ax in enumerate(axes):
        x, y = ax.lines[0].get_data()  # residual points: median − truth against the truth
        k = np.searchsorted(truths[:, j], x, sorter=np.argsort(truths[:, j]))
        idx = np.argsort(truths[:, j])[k]
        np.testing.assert_allclose(y, median[idx, j] - truths[idx, j], rtol=1e-4, atol=1e-7)


def test_tarp_and_sbc(files, drawn):
    import json

    tarp = json.loads(files["diag"].read_text())["tarp"]
    out = files["dir"] / "tarp.png"
    plots.plot_tarp(files["diag"], out)
    _ok(out)
    (ax,) = drawn[-1].axes
    alpha, ecp = ax.lines[0].get_data()
    np.testing.assert_allclose(alpha, tarp["alpha"])
    np.testing.assert_allclose(ecp, tarp["ecp"])
    assert f"{tarp['max_dev']:.3f}" in ax.get_title() and tarp["max_dev"] < 0.3  # calibrated synthetic posteriors
    samples, _ = _posterior(files)
    for i, source in enumerate((files["diag"], files["post"])):
        out = files["dir"] / f"sbc{i}.png"
        plots.plot_sbc(source, out)
        _ok(out)
        axes = _data_axes(drawn[-1])
        assert len(axes) == len(COLS)
        for ax in axes:  # the rank histogram (the last stairs) counts every lens once
            counts = ax.patches[-1].get_data().values
            assert counts.sum() == samples.shape[0]
    out = files["dir"] / "sbc_ranks.png"
    ranks = np.random.default_rng(1).integers(0, 101, (80, 2))
    plots.plot_sbc(ranks, out, n_samples=100, columns=["a", "b"])
    _ok(out)
    axes = _data_axes(drawn[-1])
    assert len(axes) == 2 and all(ax.patches[-1].get_data().values.sum() == 80 for ax in axes)


def test_corner_png_and_pdf(files, drawn):
    for suffix in ("png", "pdf"):
        out = files["dir"] / f"corner.{suffix}"
        plots.plot_corner(files["post"], [0, 3, 5], out, max_samples=100)
        _ok(out)
    subfigs = list(drawn[-1].subfigs)  # the png: one corner plot (k × k panels) per lens
    assert len(subfigs) >= 3 and [len(sf.axes) for sf in subfigs[:3]] == [len(COLS) ** 2] * 3
    assert [sf._suptitle.get_text().split()[0] for sf in subfigs[:3]] == ["sim0", "sim3", "sim5"]
    pdf = (files["dir"] / "corner.pdf").read_bytes()
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 3  # one page per lens


def test_corner_of_a_single_parameter(tmp_path, drawn):
    """γ-only posteriors (the demo's NPE) give one-panel corner plots with the truth marked."""
    rng = np.random.default_rng(0)
    path = tmp_path / "post1.npz"
    np.savez(path, samples=rng.normal(2.0, 0.1, (3, 200, 1)), truths=np.array([[2.0], [1.9], [2.1]]),
             columns=np.array(["gamma_pop"]))
    out = tmp_path / "corner1.png"
    plots.plot_corner(path, [0, 1], out)
    _ok(out)
    truths = [[ln.get_xdata()[0] for ln in sf.axes[0].lines if ln.get_color() == "C3"] for sf in drawn[-1].subfigs]
    assert truths == [[2.0], [1.9]]  # one panel per lens, its truth marked


def test_estimator_comparison_and_derived(files, drawn):
    out = files["dir"] / "compare.png"
    plots.plot_estimator_comparison(files["nre"], files["npe"], out)
    _ok(out)
    axes = _data_axes(drawn[-1])
    assert [ax.get_title() for ax in axes] == ["J0946+1006", "J1630+4520", "combined"]
    for est in ("nre", "npe"):
        table = np.loadtxt(files[est], delimiter=",", skiprows=1)
        for j, ax in enumerate(axes):
            curve = next(ln for ln in ax.lines if ln.get_label() == est.upper())
            x, y = curve.get_data()
            np.testing.assert_allclose(x, table[:, 0])
            np.testing.assert_allclose(y, np.exp(table[:, j + 1] - table[:, j + 1].max()), rtol=1e-6)
            peaks = [ln.get_xdata()[0] for ln in ax.lines if ln.get_linestyle() == ":"]
            assert table[np.argmax(table[:, j + 1]), 0] in peaks  # the MLE marker
    out = files["dir"] / "derived.png"
    plots.plot_derived(files["derived"], out)
    _ok(out)


def test_examples_and_observations_show_multiband_images_as_rgb(tmp_path, drawn):
    """(C, H, W) survey images are drawn as an RGB composite of the three reddest bands; masks that keep every
    pixel draw no outline."""
    from lensinfer.plots import _display, plot_observations

    rng = np.random.default_rng(1)
    cube = rng.normal(1.0, 0.1, (4, 12, 12)).astype(np.float32)
    rgb, cmap = _display(cube)
    assert rgb.shape == (12, 12, 3) and cmap is None and 0 <= rgb.min() and rgb.max() <= 1
    single, cmap = _display(cube[0])
    assert single.shape == (12, 12) and cmap == "magma"
    paths = []
    for i in range(2):
        np.save(tmp_path / f"img{i}.npy", cube * (i + 1))
        np.save(tmp_path / f"mask{i}.npy", np.ones((12, 12), bool))
        paths.append((str(tmp_path / f"img{i}.npy"), str(tmp_path / f"mask{i}.npy")))
    out = tmp_path / "obs.png"
    plot_observations([p for p, _ in paths], [m for _, m in paths], ["a", "b"], out)
    assert out.stat().st_size > 1000
    shown = [(ax.get_title(), ax.images[0].get_array().shape) for ax in drawn[-1].axes if ax.images]
    assert shown == [("a", (12, 12, 3)), ("b", (12, 12, 3))]


def test_observation_figure_names_the_peak_count_of_a_lens_it_flagged(tmp_path, drawn):
    import json

    from lensinfer.plots import plot_observations

    rng = np.random.default_rng(2)
    paths = []
    for i in range(2):
        np.save(tmp_path / f"img{i}.npy", rng.normal(1.0, 0.1, (12, 12)).astype(np.float32))
        np.save(tmp_path / f"mask{i}.npy", np.ones((12, 12), bool))
        paths.append((str(tmp_path / f"img{i}.npy"), str(tmp_path / f"mask{i}.npy")))
    lens = {"p_value": 0.5, "noise_ratio": 1.0, "pixel_scale_ratio": 1.0, "peak_count": 4, "flagged": False,
            "reasons": []}
    knotty = dict(lens, p_value=0.003, peak_count=31, flagged=True,
                  reasons=["peak-count p-value 0.003 < alpha 0.01 (Bonferroni over the embedding, image-statistics, "
                           "peak-count tests)"])
    (tmp_path / "npe").mkdir()
    (tmp_path / "npe" / "misspecification.json").write_text(json.dumps({"lenses": {"a": lens, "b": knotty}}))
    plot_observations([p for p, _ in paths], [m for _, m in paths], ["a", "b"], tmp_path / "obs.png",
                      misspecification=[str(tmp_path / "npe" / "misspecification.json")])
    titles = [ax.get_title() for ax in drawn[-1].axes if ax.images]
    assert titles[0] == "a"
    assert titles[1].startswith("b\nFLAGGED (npe): p=0.003") and titles[1].endswith("31 peaks"), titles
