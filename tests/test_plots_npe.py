"""Figures of the posterior diagnostics and derived quantities (new functions of lensinfer.plots): each writes a
non-empty file from small synthetic inputs."""

from __future__ import annotations

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


def test_truth_vs_prediction_and_residuals(files):
    out = files["dir"] / "tvp.png"
    plots.plot_truth_vs_prediction(files["post"], out)
    _ok(out)
    out = files["dir"] / "resid.png"
    plots.plot_residuals(files["post"], out, columns=COLS[:2])
    _ok(out)


def test_tarp_and_sbc(files):
    out = files["dir"] / "tarp.png"
    plots.plot_tarp(files["diag"], out)
    _ok(out)
    for i, source in enumerate((files["diag"], files["post"])):
        out = files["dir"] / f"sbc{i}.png"
        plots.plot_sbc(source, out)
        _ok(out)
    out = files["dir"] / "sbc_ranks.png"
    plots.plot_sbc(np.random.default_rng(1).integers(0, 101, (80, 2)), out, n_samples=100, columns=["a", "b"])
    _ok(out)


def test_corner_png_and_pdf(files):
    for suffix in ("png", "pdf"):
        out = files["dir"] / f"corner.{suffix}"
        plots.plot_corner(files["post"], [0, 3, 5], out, max_samples=100)
        _ok(out)


def test_corner_of_a_single_parameter(tmp_path):
    """γ-only posteriors (the demo's NPE) give one-panel corner plots with the truth marked."""
    rng = np.random.default_rng(0)
    path = tmp_path / "post1.npz"
    np.savez(path, samples=rng.normal(2.0, 0.1, (3, 200, 1)), truths=np.array([[2.0], [1.9], [2.1]]),
             columns=np.array(["gamma_pop"]))
    out = tmp_path / "corner1.png"
    plots.plot_corner(path, [0, 1], out)
    _ok(out)


def test_estimator_comparison_and_derived(files):
    out = files["dir"] / "compare.png"
    plots.plot_estimator_comparison(files["nre"], files["npe"], out)
    _ok(out)
    out = files["dir"] / "derived.png"
    plots.plot_derived(files["derived"], out)
    _ok(out)


def test_examples_and_observations_show_multiband_images_as_rgb(tmp_path):
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
