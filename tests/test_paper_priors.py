"""The paper configuration draws the published priors (spec/science.md §0–§1), checked on many drawn scenes.

Scenes are drawn by the same code the simulate rule runs (``draw_scene``: every draw except the final render and
noise), with the COSMOS catalog replaced by the project's fixture.
"""

import numpy as np
import pytest
from scipy import stats

from lensinfer.config import load_config
from lensinfer.simulate.instrument import Instrument
from lensinfer.simulate.lenstronomy_backend import LenstronomyRenderer
from lensinfer.simulate.scene import SUBHALO_COLUMNS
from lensinfer.simulate.shard import draw_scene, population_of, source_catalog
from lensinfer.seeds import image_rng, image_seeds

from .cosmos_fixture import make_cosmos_fixture

COL = {c: i for i, c in enumerate(SUBHALO_COLUMNS)}


@pytest.fixture(scope="module")
def paper_scenes(tmp_path_factory, root):
    cfg = load_config(root / "config" / "paper.yaml")
    cfg["lens"]["source"]["catalog_dir"] = str(make_cosmos_fixture(tmp_path_factory.mktemp("cat")))
    cfg["lens"]["source"].pop("download")
    assert cfg["lens"]["los"]["delta_los"] == {"uniform": [0.0, 2.0]}  # LOS draws are tested in test_los.py
    assert cfg["lens"]["los"]["gamma_scatter"] == "reference"  # σ = 0.1 γ², the reference's LOSDG19_epl
    cfg["lens"]["los"] = None
    renderer = LenstronomyRenderer(Instrument(cfg["instrument"]))
    cosmos = source_catalog(cfg, "train")
    pop = population_of(cfg, "train")
    seeds = image_seeds(cfg["seed"], "train", 0, 60)
    scenes = [draw_scene(image_rng(s), renderer=renderer, config=cfg, population=pop, global_index=i, cosmos=cosmos)
              for i, s in enumerate(seeds)]
    return cfg, scenes


def test_published_grid_and_psf(paper_scenes):
    cfg, _ = paper_scenes
    inst = Instrument(cfg["instrument"])
    assert inst.pixel_scale == 0.04 and inst.num_pix == 100
    assert inst.sigma_bkg == pytest.approx(0.00412, rel=3e-3)
    psf = inst.psf()
    assert psf.shape[0] % 2 == 1 and psf.sum() == pytest.approx(1.0) and 20 <= psf.shape[0] <= 27


def test_macro_priors(paper_scenes):
    _, scenes = paper_scenes
    t = {k: np.array([s.params[k] for s in scenes]) for k in scenes[0].params}
    assert t["lens_theta_E"].min() >= 0.9 and t["lens_theta_E"].max() <= 1.3
    assert t["lens_gamma"].min() >= 1.1 and t["lens_gamma"].max() <= 2.9 and abs(np.median(t["lens_gamma"]) - 2.0) < 0.06
    for k in ("lens_e1", "lens_e2", "lens_center_x", "lens_center_y"):
        assert np.abs(t[k]).max() <= 0.2
    assert np.abs(t["shear_gamma1"]).max() <= 0.1 and np.abs(t["shear_gamma2"]).max() <= 0.1
    assert t["multipole3_a"].max() <= 0.05 and t["multipole4_a"].min() >= 0
    assert 0.15 <= t["z_lens"].min() and t["z_lens"].max() <= 0.25 and 0.5 <= t["z_source"].min() <= t["z_source"].max() <= 0.7
    assert 16 <= t["lens_light_magnitude"].min() and t["lens_light_magnitude"].max() <= 19
    assert stats.kstest(t["gamma_pop"], stats.uniform(1.1, 1.8).cdf).pvalue > 0.01
    assert t["n_sub"].min() >= 0 and t["n_sub"].max() < 3000 and abs(t["n_sub"].mean() - 1500) < 250
    assert "source_catalog_index" in t


def test_subhalo_population(paper_scenes):
    _, scenes = paper_scenes
    subs = np.concatenate([s.subhalos for s in scenes])
    m = subs[:, COL["mass"]]
    assert m.min() >= 1e7 and m.max() <= 1e10 and m.mean() == pytest.approx(8.98e7, rel=0.1)
    g = subs[:, COL["gamma"]]
    assert g.min() >= 1.01 and g.max() <= 2.99
    # per-subhalo slope scatter is 10 % of the image's γ
    s = scenes[int(np.argmax([sc.subhalos.shape[0] for sc in scenes]))]
    rel = s.subhalos[:, COL["gamma"]] / s.params["gamma_pop"]
    assert 0.05 < rel.std() < 0.11
    assert np.abs(subs[:, COL["e1"]]).max() <= 0.2
    # placement: within half a pixel of the 4" field and the sheet cancels the mean convergence (negative)
    assert np.abs(subs[:, COL["x"]]).max() <= 2.0 and all(sc.params["nms_kappa"] <= 0 for sc in scenes)
