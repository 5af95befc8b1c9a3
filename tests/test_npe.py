"""Neural posterior estimator: flow shapes and normalisation, whitening of any targets, multi-band data, the shared
training loop (learning, bit-identical resume), γ curves in the NRE format, posterior samples, observations."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from zuko.transforms import MonotonicRQSTransform

from lensinfer.data.loader import ChunkShuffleLoader, MergedDataset, NoiseModel, Whitening, load_whitening, noise_model_of
from lensinfer.data.merge import merge_dataset, write_masks
from lensinfer.data.store import ShardData, write_shard
from lensinfer.models.flow import FastRQSTransform, FlowPosterior, build_flow_posterior, fast_asinh
from lensinfer.npe import dataset_curves as npe_curves
from lensinfer.npe import gamma_curves, infer_observations, kde_log_density, posterior_samples
from lensinfer.train import load_estimator, train_flow_posterior, train_ratio_estimator

FLOW = {"type": "nsf", "transforms": 2, "hidden_features": [16, 16], "bins": 4, "passes": 2, "context_features": 8,
        "targets": ["gamma_pop"], "embedding": {"depth": "small", "width": 4, "dropout": 0.0}}
TRAIN = {"lr": 3e-3, "weight_decay": 1e-5, "batch_size": 16, "max_epochs": 3, "shuffle_buffer_chunks": 2,
         "scheduler": {"factor": 0.1, "patience": 3, "threshold": 0.01, "cooldown": 2},
         "early_stopping": {"patience": 10, "min_delta": 0.001}, "num_workers": 0, "device": "cpu"}
COLUMNS = ["lens_theta_E", "lens_center_x", "lens_center_y", "lens_e1", "gamma_pop", "n_sub"]


def _dataset(root: Path, n: int = 64, num_pix: int = 12, bands: int = 0, noiseless: bool = False) -> Path:
    """Two shards whose images carry γ (ring amplitude) and e1 (a left–right gradient); ``bands`` > 0 stores
    (N, C, H, W) images with per-band amplitudes and per-band noise attrs."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:num_pix, :num_pix] - (num_pix - 1) / 2
    ring = np.exp(-((np.hypot(xx, yy) - 3) ** 2) / 2.0)
    paths = []
    for s in range(2):
        m = n // 2
        gamma, e1 = rng.uniform(1.1, 2.9, m), rng.uniform(-0.2, 0.2, m)
        img = gamma[:, None, None] * ring + 5 * e1[:, None, None] * xx / num_pix
        if bands:
            img = np.stack([img * (1 + b) for b in range(bands)], axis=1)
        if not noiseless:
            img = img + rng.normal(0, 0.2, img.shape)
        params = np.column_stack([np.full(m, 0.5), np.zeros(m), np.zeros(m), e1, gamma, np.zeros(m)])
        data = ShardData(images=img.astype(np.float32), params=params, columns=COLUMNS,
                         image_seed=np.arange(m, dtype=np.uint64), subhalos=np.zeros((0, 1)), subhalo_columns=["mass"],
                         subhalo_offsets=np.zeros(m + 1, np.int64))
        attrs = {"dataset": "npe", "shard": s}
        if bands:
            attrs["bands"] = [f"b{b}" for b in range(bands)]
        if noiseless:
            attrs.update(noiseless=True, sigma_bkg=[0.1 * (b + 1) for b in range(bands)] if bands else 0.1,
                         exposure_time=[100.0] * bands if bands else 100.0)
        paths.append(root / f"shard_{s}.zarr")
        write_shard(paths[-1], data, attrs, chunk_images=8)
    merge_dataset("npe", paths, root / "merged", pixel_scale=0.1, radius_theta_e=1.5)
    write_masks(root / "merged", root / "merged" / "masks.zarr", pixel_scale=0.1, radius_theta_e=1.5, chunk_images=8)
    return root / "merged"


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    return _dataset(tmp_path_factory.mktemp("npe_single"))


def _train(out: Path, data: Path, flow: dict, max_epochs: int, ckpt: Path | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return train_flow_posterior(
        train_dir=data, train_masks=data / "masks.zarr", val_dir=data, val_masks=data / "masks.zarr",
        whitening=data / "stats.json", flow_cfg=flow, train_cfg=dict(TRAIN, max_epochs=max_epochs), seed=3,
        out_model=out / "model.pt", out_history=out / "history.csv", checkpoint_dir=ckpt or out / "ckpt", threads=1)


# --- flow -----------------------------------------------------------------------------------------------------------

def test_fast_spline_equals_zuko_spline():
    torch.manual_seed(0)
    w, h, d = torch.randn(50, 6) * 4, torch.randn(50, 6) * 4, torch.randn(50, 5) * 4
    x = torch.randn(50) * 3
    fast, ref = FastRQSTransform(w, h, d), MonotonicRQSTransform(w, h, d)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.inv(x), ref.inv(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.call_and_ladj(x)[1], ref.call_and_ladj(x)[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["nsf", "maf"])
def test_flow_density_is_normalised_for_one_parameter(kind):
    torch.manual_seed(1)
    model = build_flow_posterior(dict(FLOW, type=kind), n_params=1).eval()
    with torch.no_grad():
        for p in model.flow.parameters():  # a non-trivial density
            p.add_(0.3 * torch.randn_like(p))
        feats = model.embed(torch.randn(3, 16, 16))
        grid = torch.linspace(-12, 12, 6001)
        logq = model.log_prob_features(grid[:, None, None].expand(-1, 3, 1), feats)  # (G, B)
    assert logq.shape == (6001, 3)
    np.testing.assert_allclose((logq.exp().sum(0) * (grid[1] - grid[0])).numpy(), 1.0, atol=5e-3)


@pytest.mark.parametrize("n_params,in_channels", [(1, 1), (3, 1), (8, 2)])
def test_flow_shapes_and_embed_once(n_params, in_channels):
    torch.manual_seed(2)
    model = FlowPosterior(n_params, in_channels, depth="small", width=4, transforms=2, hidden_features=[8],
                          context_features=4).eval()
    x = torch.randn(5, 16, 16) if in_channels == 1 else torch.randn(5, in_channels, 16, 16)
    theta = torch.randn(5, n_params)
    with torch.no_grad():
        lp = model.log_prob(theta, x)
        assert lp.shape == (5,) and torch.isfinite(lp).all()
        torch.testing.assert_close(model.log_prob_features(theta, model.embed(x)), lp)
        gen = torch.Generator().manual_seed(0)
        s = model.sample(x, 7, chunk=14, generator=gen)  # chunked: 2 images per chunk
        assert s.shape == (5, 7, n_params) and torch.isfinite(s).all()
        again = model.sample(x, 7, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(s, again)  # same draws whatever the chunking


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kind,n_params,passes", [("nsf", 1, 2), ("nsf", 5, 2), ("maf", 4, 2), ("nsf", 3, 0)])
def test_fast_sampler_equals_zuko_inverse(kind, n_params, passes, fused, monkeypatch):
    """The coupling fast path, with the fused numba spline kernel (lensinfer.models.spline) or zuko's tensor
    splines, gives zuko's own inverse of the same base draws."""
    from lensinfer.models import flow as flow_module

    if fused and not flow_module.spline.available():
        pytest.skip("numba not installed")
    if not fused:
        monkeypatch.setattr(flow_module.spline, "available", lambda: False)
    calls = []
    kernel = flow_module.spline.rqs_inverse
    monkeypatch.setattr(flow_module.spline, "rqs_inverse", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    torch.manual_seed(3)
    model = build_flow_posterior(dict(FLOW, type=kind, transforms=3, passes=passes), n_params=n_params).eval()
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    feats = torch.randn(4, 8)
    fast = model.sample_features(feats, 30, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    z = torch.stack([torch.randn((30, n_params), generator=gen) for _ in range(4)], dim=1)
    ref = model.sample_features_reference(feats, z).transpose(0, 1)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    # the kernel runs for both passes of every NSF coupling layer (not for the affine MAF, the fully autoregressive
    # flow or the element-wise flow zuko builds for one parameter)
    assert len(calls) == (3 * 2 if fused and kind == "nsf" and passes == 2 and n_params > 1 else 0)


def test_stretch_is_arcsinh_about_the_zero_flux_level_and_is_saved(tmp_path, single):
    torch.manual_seed(4)
    kw = dict(depth="small", width=4, transforms=1, hidden_features=[8], context_features=4)
    linear = FlowPosterior(2, 1, **kw).eval()
    stretched = FlowPosterior(2, 1, stretch=0.3, zero_level=-0.5, **kw).eval()
    stretched.load_state_dict(linear.state_dict() | {"zero_level": torch.tensor([-0.5])})
    x = torch.randn(3, 16, 16) * 5
    with torch.no_grad():
        torch.testing.assert_close(stretched.embed(x), linear.embed(torch.asinh((x + 0.5) / 0.3)))
    # trained through the loop: the model keeps the training set's zero level −μ/σ, and load_estimator restores it
    w = load_whitening(single / "stats.json")
    assert w.zero_level == pytest.approx((-w.image_mean / w.image_std,))
    _train(tmp_path / "m", single, dict(FLOW, embedding=dict(FLOW["embedding"], stretch=0.5)), 1)
    _, model, _ = load_estimator(tmp_path / "m" / "model.pt")
    assert model.stretch == 0.5 and model.zero_level.tolist() == pytest.approx(list(w.zero_level))


def test_fast_asinh_matches_float64_asinh_and_its_gradient():
    u = torch.cat([torch.linspace(-50, 50, 20001), torch.logspace(-12, 18, 301), -torch.logspace(-12, 18, 301),
                   torch.zeros(1)])
    exact = torch.asinh(u.double())
    got = fast_asinh(u).double()
    assert ((got - exact).abs() <= 3e-7 * exact.abs() + 1e-30).all()
    assert torch.equal(torch.signbit(got), torch.signbit(u))  # odd, −0 included
    assert torch.isfinite(fast_asinh(torch.tensor([1e30, -1e30, 3e38]))).all()  # clamped, no inf/inf
    v = torch.linspace(-30, 30, 601, dtype=torch.float32, requires_grad=True)
    (grad,) = torch.autograd.grad(fast_asinh(v).sum(), v)
    torch.testing.assert_close(grad, 1 / torch.sqrt(1 + v.detach() ** 2), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("in_channels", [1, 2])
def test_fused_inference_copy_equals_the_eval_model(in_channels):
    """FlowPosterior.fused (load_flow's copy): BatchNorm folded, channels_last — same contexts and samples."""
    torch.manual_seed(6)
    model = FlowPosterior(3, in_channels, depth="small", width=4, transforms=2, hidden_features=[8],
                          context_features=4, stretch=0.2, zero_level=-0.3)
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            model.embed(torch.randn(8, in_channels, 20, 20) * 2 + 1)
    model.eval()
    fused = model.fused()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert not any(p.requires_grad for p in fused.parameters()) and model.embedding.stem[1].weight.requires_grad
    x = torch.randn(5, in_channels, 20, 20) * 3
    with torch.no_grad():
        torch.testing.assert_close(fused.embed(x), model.embed(x), rtol=1e-4, atol=1e-5)
        a = fused.sample(x, 6, generator=torch.Generator().manual_seed(1))
        b = model.sample(x, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


# --- whitening, stats, multi-band ------------------------------------------------------------------------------------

def test_whitening_targets_round_trip(single):
    stats = json.loads((single / "stats.json").read_text())
    assert set(stats["params"]) == set(COLUMNS) and isinstance(stats["image_mean"], float)
    assert stats["params"]["gamma_pop"]["mean"] == pytest.approx(stats["gamma_mean"])
    w = load_whitening(single / "stats.json", ["lens_e1", "gamma_pop"])
    values = np.column_stack([np.linspace(-0.2, 0.2, 5), np.linspace(1.1, 2.9, 5)])
    np.testing.assert_allclose(w.unparams(w.params(values)), values, rtol=1e-12)
    t = torch.as_tensor(values, dtype=torch.float32)
    torch.testing.assert_close(w.unparams(w.params(t)), t)
    np.testing.assert_allclose(w.params(values)[:, 1], w.theta(values[:, 1]))  # γ whitened as for the NRE
    assert Whitening(**w.to_dict()) == w
    legacy = load_whitening(single / "stats.json")
    assert set(legacy.to_dict()) == {"image_mean", "image_std", "gamma_mean", "gamma_std"}  # NRE fingerprints kept
    with pytest.raises(ValueError, match="degenerate"):
        load_whitening(single / "stats.json", ["lens_theta_E"])  # constant column


def test_multiband_stats_loader_noise_and_training(tmp_path):
    merged = _dataset(tmp_path, n=32, bands=2, noiseless=True)
    stats = json.loads((merged / "stats.json").read_text())
    assert stats["n_channels"] == 2 and stats["bands"] == ["b0", "b1"] and len(stats["image_mean"]) == 2
    assert stats["image_std"][1] == pytest.approx(2 * stats["image_std"][0], rel=1e-6)  # band 1 = 2 × band 0
    ds = MergedDataset(merged, merged / "masks.zarr")
    assert ds.n_channels == 2 and ds.image_shape[0] == 2 and ds.mask_shape == ds.image_shape[1:]
    w = load_whitening(merged / "stats.json", ["gamma_pop", "lens_e1"])
    assert noise_model_of(ds) == NoiseModel((0.1, 0.2), (100.0, 100.0))
    loader = ChunkShuffleLoader(ds, w, 8, seed=0, shuffle=False, drop_last=False)
    x, theta = map(torch.cat, zip(*loader))
    assert x.shape == (32, 2) + ds.mask_shape and theta.shape == (32, 2)
    images, masks = ds.read(np.arange(32))
    mu, sd = np.array(stats["image_mean"])[:, None, None], np.array(stats["image_std"])[:, None, None]
    np.testing.assert_allclose(x.numpy(), ((images - mu) / sd * masks[:, None]).astype(np.float32), rtol=1e-5, atol=1e-5)
    noisy = ChunkShuffleLoader(ds, Whitening((0.0, 0.0), (1.0, 1.0), 2.0, 0.5), 32, seed=0, shuffle=False,
                               noise=noise_model_of(ds))
    e = next(iter(noisy))[0].numpy() - images * masks[:, None]
    sigma = np.sqrt(np.array([0.01, 0.04])[:, None, None] + np.abs(images) / 100.0)
    z = (e / sigma)[np.broadcast_to(masks[:, None], e.shape)]
    assert z.std() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="band"):
        ChunkShuffleLoader(ds, Whitening(0.0, 1.0, 2.0, 0.5), 8, seed=0)
    # both estimators train on 2-band images through the shared loop (in_channels from the data)
    flow = dict(FLOW, targets=["gamma_pop", "lens_e1"], augment="dihedral")  # flips act on (B, C, H, W) too
    _train(tmp_path / "npe", merged, flow, 1)
    kind, model, w2 = load_estimator(tmp_path / "npe" / "model.pt")
    assert kind == "npe" and model.embedding.stem[1].in_channels == 2 and w2.targets == ("gamma_pop", "lens_e1")
    train_ratio_estimator(train_dir=merged, train_masks=merged / "masks.zarr", val_dir=merged,
                          val_masks=merged / "masks.zarr", whitening=load_whitening(merged / "stats.json"),
                          model_cfg={"depth": "small", "width": 4, "head_hidden": 8, "dropout": 0.0},
                          train_cfg=dict(TRAIN, max_epochs=1), seed=3, out_model=tmp_path / "nre.pt",
                          out_history=tmp_path / "nre.csv", checkpoint_dir=tmp_path / "nre_ckpt", threads=1)
    kind, nre, _ = load_estimator(tmp_path / "nre.pt")
    assert kind == "nre" and nre.embedding.stem[1].in_channels == 2


# --- training, curves, samples, observations ---------------------------------------------------------------------------

def test_training_learns_and_resumes_bit_identically(tmp_path, single):
    _train(tmp_path / "full", single, FLOW, 3)
    rows = list(csv.DictReader(open(tmp_path / "full" / "history.csv")))
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "lr", "seconds"] and len(rows) == 3
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    _train(tmp_path / "part", single, FLOW, 1)
    _train(tmp_path / "part", single, FLOW, 3)  # resumes at epoch 1
    assert [r["epoch"] for r in csv.DictReader(open(tmp_path / "part" / "history.csv"))] == ["0", "1", "2"]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "model.pt", weights_only=True)
    assert a["kind"] == "npe" and a["targets"] == ["gamma_pop"] and a["flow_cfg"] == FLOW
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="targets"):
        train_flow_posterior(train_dir=single, train_masks=single / "masks.zarr", val_dir=single,
                             val_masks=single / "masks.zarr", whitening=load_whitening(single / "stats.json"),
                             flow_cfg=dict(FLOW, targets=["lens_e1"]), train_cfg=TRAIN, seed=3, out_model=tmp_path / "x",
                             out_history=tmp_path / "y", checkpoint_dir=tmp_path / "z")


def test_curves_match_the_nre_format_and_samples(tmp_path, single):
    grid_cfg = {"low": 1.1, "high": 2.9, "n": 30}
    train_ratio_estimator(train_dir=single, train_masks=single / "masks.zarr", val_dir=single,
                          val_masks=single / "masks.zarr", whitening=load_whitening(single / "stats.json"),
                          model_cfg={"depth": "small", "width": 4, "head_hidden": 8, "dropout": 0.0},
                          train_cfg=dict(TRAIN, max_epochs=1), seed=3, out_model=tmp_path / "nre.pt",
                          out_history=tmp_path / "nre.csv", checkpoint_dir=tmp_path / "nre_ckpt", threads=1)
    from lensinfer.infer import dataset_curves as nre_curves

    nre_curves(tmp_path / "nre.pt", single, single / "masks.zarr", grid_cfg, tmp_path / "nre.npz")
    _train(tmp_path / "g", single, FLOW, 1)
    npe_curves(tmp_path / "g" / "model.pt", single, single / "masks.zarr", grid_cfg, tmp_path / "npe.npz")
    ref, got = np.load(tmp_path / "nre.npz"), np.load(tmp_path / "npe.npz")
    assert set(ref.files) == set(got.files)
    for k in ref.files:
        assert ref[k].shape == got[k].shape and ref[k].dtype == got[k].dtype, k
    np.testing.assert_array_equal(ref["gamma"], got["gamma"])
    assert np.allclose(got["curves"].max(axis=1), 0) and np.isfinite(got["curves"]).all()

    # two targets: the γ marginal from samples (KDE); posterior samples of both
    flow2 = dict(FLOW, targets=["lens_e1", "gamma_pop"])
    _train(tmp_path / "two", single, flow2, 1)
    c2 = npe_curves(tmp_path / "two" / "model.pt", single, single / "masks.zarr", grid_cfg, tmp_path / "two.npz",
                    n_samples=200)
    assert c2.shape == ref["curves"].shape and np.allclose(c2.max(axis=1), 0) and np.isfinite(c2).all()
    out = posterior_samples(tmp_path / "two" / "model.pt", single, single / "masks.zarr", 20, tmp_path / "s.npz", seed=0)
    blob = np.load(tmp_path / "s.npz")
    assert blob["samples"].shape == (64, 20, 2) and blob["truths"].shape == (64, 2)
    assert list(blob["columns"]) == ["lens_e1", "gamma_pop"] == out["columns"]
    assert 1.0 < np.median(blob["samples"][..., 1]) < 3.0  # de-whitened (physical γ)

    # γ not a target: no curves
    _train(tmp_path / "e1", single, dict(FLOW, targets=["lens_e1"]), 1)
    with pytest.raises(ValueError, match="gamma_pop"):
        npe_curves(tmp_path / "e1" / "model.pt", single, single / "masks.zarr", grid_cfg, tmp_path / "e1.npz")

    # observations: same summary/curves outputs as the NRE, plus samples
    ds = MergedDataset(single, single / "masks.zarr")
    images, masks = ds.read(np.arange(3))
    files_i, files_m = [], []
    for i in range(3):
        np.save(tmp_path / f"img{i}.npy", images[i])
        np.save(tmp_path / f"mask{i}.npy", masks[i])
        files_i.append(str(tmp_path / f"img{i}.npy"))
        files_m.append(str(tmp_path / f"mask{i}.npy"))
    th = tmp_path / "thresholds.json"
    th.write_text(json.dumps({"set_sizes": {"1": {"thresholds": {"0.68": 1.2, "0.95": 4.0}},
                                            "3": {"thresholds": {"0.68": 1.5, "0.95": 4.5}}}}))
    cfg = {"grid": grid_cfg, "levels": [0.68, 0.95], "combine_size": 13}
    summary = infer_observations(model_path=tmp_path / "two" / "model.pt", thresholds_path=th, names=["a", "b", "c"],
                                 images=files_i, masks=files_m, inference_cfg=cfg, out_summary=tmp_path / "sum.json",
                                 out_curves=tmp_path / "curves.csv", out_samples=tmp_path / "obs.npz", n_samples=100)
    assert set(summary["per_lens"]) == {"a", "b", "c"} and "recalibrated" in summary["per_lens"]["a"]["intervals"]["0.68"]
    assert summary["per_lens_parameters"]["a"]["gamma_pop"]["q16"] <= summary["per_lens_parameters"]["a"]["gamma_pop"]["q84"]
    assert open(tmp_path / "curves.csv").readline().strip() == "gamma,a,b,c,combined"
    assert np.load(tmp_path / "obs.npz")["samples"].shape == (3, 100, 2)
    macro = infer_observations(model_path=tmp_path / "e1" / "model.pt", thresholds_path=None, names=["a", "b", "c"],
                               images=files_i, masks=files_m, inference_cfg=cfg, out_summary=tmp_path / "m.json",
                               out_curves=tmp_path / "m.csv", out_samples=tmp_path / "m.npz", n_samples=50)
    assert macro["gamma"] is None and set(macro["per_lens_parameters"]["c"]) == {"lens_e1"}


def test_exact_and_kde_curves_agree_for_a_gaussian():
    grid = np.linspace(1.1, 2.9, 150)
    rng = np.random.default_rng(0)
    logd = kde_log_density(rng.normal(2.0, 0.1, (1, 20000)), grid, 1.1, 2.9)[0]
    exact = -0.5 * ((grid - 2.0) / 0.1) ** 2 - np.log(0.1 * np.sqrt(2 * np.pi))
    near = np.abs(grid - 2.0) < 0.2
    np.testing.assert_allclose(logd[near], exact[near], atol=0.08)
    # reflection at the bounds: a uniform sample has a flat KDE up to the edges
    flat = kde_log_density(rng.uniform(1.1, 2.9, (1, 20000)), grid, 1.1, 2.9)[0]
    assert np.ptp(flat) < 0.15


def test_gamma_curves_subtract_the_prior():
    torch.manual_seed(4)
    model = build_flow_posterior(FLOW, 1).eval()
    w = Whitening(0.0, 1.0, 2.0, 0.5)
    grid = np.linspace(1.2, 2.8, 40)
    feats = model.embed(torch.randn(2, 16, 16)).detach()
    flat = gamma_curves(model, w, feats, grid)
    prior = {"normal": [2.0, 0.3]}
    tilted = gamma_curves(model, w, feats, grid, gamma_prior=prior)
    diff = tilted - flat
    expected = 0.5 * ((grid - 2.0) / 0.3) ** 2
    np.testing.assert_allclose(diff - diff[:, :1], np.broadcast_to(expected - expected[0], diff.shape), atol=1e-4)


def test_bench_science_npe_quick():
    """``bench/science_npe.py --quick`` runs end to end (simulate, train, sample, metrics) and ends with its JSON."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(root / ".numba_cache"), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(root / "bench" / "science_npe.py"), "--quick", "--procs", "1",
                           "--threads", "1"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("r2_theta_E", "r2_e1", "r2_e2", "tarp_max_dev", "seconds_2500_lenses_5000_samples"):
        assert np.isfinite(out[key]), key
    assert 0 <= out["tarp_max_dev"] <= 1 and out["seconds_2500_lenses_5000_samples"] > 0
    assert out["sampling_extrapolated"] is True  # --quick times 8 lenses and scales: labelled so


def test_dihedral_augmentation_matches_the_simulator(root):
    """Rotating/reflecting a rendered lens equals rendering the transformed parameters (pixel convention check)."""
    from lensinfer.config import load_config
    from lensinfer.data.loader import DihedralAugmentation
    from lensinfer.simulate.renderers import make_renderer
    from lensinfer.simulate.scene import Scene

    renderer = make_renderer(load_config(root / "config" / "test.yaml"))
    cols = ["lens_theta_E", "lens_gamma", "lens_e1", "lens_e2", "lens_center_x", "lens_center_y", "shear_gamma1",
            "shear_gamma2", "source_e1", "source_e2", "source_center_x", "source_center_y"]
    truth = np.array([1.0, 2.1, 0.12, -0.05, 0.15, -0.08, 0.04, -0.03, 0.1, 0.25, 0.06, -0.03])

    def render(v):
        p = dict(zip(cols, v))
        lens = [{"theta_E": p["lens_theta_E"], "gamma": p["lens_gamma"], "e1": p["lens_e1"], "e2": p["lens_e2"],
                 "center_x": p["lens_center_x"], "center_y": p["lens_center_y"]},
                {"gamma1": p["shear_gamma1"], "gamma2": p["shear_gamma2"], "ra_0": 0.0, "dec_0": 0.0}]
        src = [{"amp": 20.0, "R_sersic": 0.2, "n_sersic": 1.5, "e1": p["source_e1"], "e2": p["source_e2"],
                "center_x": p["source_center_x"], "center_y": p["source_center_y"]}]
        return renderer.image(Scene(0.2, 0.6, ["EPL", "SHEAR"], lens, ["SERSIC_ELLIPSE"], src, [], []))

    w = Whitening(0.0, 1.0, 2.0, 0.5, tuple(cols), tuple([0.01] * len(cols)), tuple([0.5] * len(cols)))
    aug = DihedralAugmentation(w)
    image = torch.as_tensor(render(truth), dtype=torch.float32)
    x, theta = aug(image.expand(24, -1, -1), w.params(torch.as_tensor(truth)).float().expand(24, -1),
                   torch.Generator().manual_seed(0))
    phys = w.unparams(theta.double()).numpy()
    assert len({tuple(np.round(r, 6)) for r in phys}) == 8  # every group element drawn
    for img, v in zip(x.numpy(), phys):
        np.testing.assert_allclose(img, render(v), atol=1e-3 * float(image.max()))
    with pytest.raises(ValueError, match="both"):
        DihedralAugmentation(Whitening(0.0, 1.0, 2.0, 0.5, ("lens_center_x",), (0.0,), (1.0,)))
    with pytest.raises(ValueError, match="unknown behaviour"):
        DihedralAugmentation(Whitening(0.0, 1.0, 2.0, 0.5, ("multipole3_phi",), (0.0,), (1.0,)))
