"""Benchmark: time per noiseless image, lenstronomy reference path vs the batched torch renderer (issue 3, item 5).

For N_sub ∈ {0, 100, 500, 1500} EPL subhalos, one published-configuration scene per N_sub (spec/science.md §1:
0.04″/pix, 100×100, EPL + shear + m = 3, 4 multipoles, Sérsic lens light and Sérsic source, subhalos of
1e7–1e10 M⊙ with β = −1.9 placed on the pixels brighter than 0.2 × max of the smooth image, θE from the mass) is
rendered by

  (a) reference   — the reference code's work per image: a κ map of the subhalos for the sheet, an unused κ map of
                    the full model, and the image, all with lenstronomy 'EPL' (ImageModel, 'PIXEL' PSF);
  (b) ours        — torch on the CPU: the sheet from Gauss's theorem (lensinfer.lensing.sheet) + render_image;
  (c) ours CUDA   — render_batch on the GPU, float64 (skipped without CUDA);
  (d) numba       — the fastest lenstronomy path: 'EPL_NUMBA', no unused κ map, the sheet from lenstronomy
                    deflections on the shared boundary quadrature instead of a κ map (as the simulator's
                    lenstronomy backend);
  (e) caustics    — caustics 1.7.1 (Stone et al. 2024, the other batched differentiable PyTorch lens simulator), as
                    its documentation builds a scene: a ``LensSource`` simulator over a ``SinglePlane`` of EPL,
                    ExternalShear, two Multipoles, a ``BatchedPlane`` of the subhalo EPLs (vmapped over the
                    subhalos; ``--caustics-chunk`` of them at a time to bound memory) and the MassSheet, Sérsic source
                    and lens light, the same pixel PSF; float64, one thread, same scene and sheet κ as (b). Its
                    deflections are checked against lenstronomy's on the image grid (``caustics_max_dalpha_arcsec``);
                    the image differs from lenstronomy's by caustics' Sérsic b_n approximation (reported, not a
                    renderer error). A bench-only dependency (skipped with a note when caustics is absent);

plus (b') ours batched on the CPU (one render_batch of several scenes), and the whole simulator
(``simulate_image``: draws, smooth image, sheet, image, noise) per ``renderer.backend`` on ``--sim-config``. Everything runs on ONE CPU thread
(torch, numba, BLAS). JIT/compile warm-up (numba, torch.compile) is done once before timing and reported
separately, and every timed path but the reference (which has nothing to warm) gets one untimed call first.
Timings are medians over the repetitions (minima in the JSON too); the machine may be shared.

Fair-comparison notes: the scenes, PSF and grid are identical for all paths; (a) computes both κ maps as the
reference does but renders with the same sheet κ as (b), so the image comparison isolates the renderer (the
pixel-centre κ of (a) is reported next to the field mean, see lensinfer.lensing.sheet). No ray is skipped and
the physics is unchanged: the speed comes from fusing the TM15 series with the sum over subhalos into one
compiled loop. The smooth image used for subhalo placement is the same for all paths and is not timed.

Last line of stdout: one JSON object, with ``ms_caustics_{N}`` and ``speedup_vs_best_peer_{N}`` = the fastest of
lenstronomy EPL (a), EPL_NUMBA (d) and caustics (e) over ours (b). Quick mode: ``python bench/simulate.py --quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import truncnorm  # noqa: E402

from lensinfer import physics  # noqa: E402
from lensinfer.lensing import mean_convergence, render_batch, render_image  # noqa: E402

NUM_PIX, PIXEL_SCALE = 100, 0.04
BAND = dict(
    pixel_scale=PIXEL_SCALE,
    exposure_time=2200.0,
    sky_brightness=21.83,
    read_noise=3.0,
    ccd_gain=1.58,
    magnitude_zero_point=25.127,
    num_exposures=1,
)
SIGMA_BKG = physics.background_sigma(**{k: v for k, v in BAND.items() if k != "ccd_gain"})
HST_PSF = ROOT / "resources" / "psf" / "f814w_emp_psf_17.fits"


def _tn(rng: np.random.Generator, loc: float, scale: float, lo: float, hi: float, size=None):
    return truncnorm.rvs((lo - loc) / scale, (hi - loc) / scale, loc=loc, scale=scale, size=size, random_state=rng)


def psf_kernel(kind: str) -> np.ndarray:
    from lensinfer.simulate.instrument import gaussian_psf_kernel, pixel_psf_kernel

    if kind == "hst" and HST_PSF.exists():
        return pixel_psf_kernel(HST_PSF, 0, 4)  # element 17 of the F814W library, degraded by 4 (spec §1.4)
    return gaussian_psf_kernel(1.8 * PIXEL_SCALE, PIXEL_SCALE)


def draw_scene(rng: np.random.Generator, n_sub: int, gamma_pop: float, psf: np.ndarray) -> tuple[dict, dict]:
    """A published-configuration scene (spec §1.1–1.2) with a Sérsic source; returns (scene, info)."""
    from lenstronomy.SimulationAPI.sim_api import SimAPI

    z_l, z_s = rng.uniform(0.15, 0.25), rng.uniform(0.5, 0.7)
    c = dict(center_x=rng.uniform(-0.2, 0.2), center_y=rng.uniform(-0.2, 0.2))
    models = ["EPL", "SHEAR", "MULTIPOLE", "MULTIPOLE"]
    kwargs = [
        dict(
            theta_E=rng.uniform(0.9, 1.3),
            gamma=float(_tn(rng, 2.0, 0.2, 1.1, 2.9)),
            e1=rng.uniform(-0.2, 0.2),
            e2=rng.uniform(-0.2, 0.2),
            **c,
        ),
        dict(gamma1=rng.uniform(-0.1, 0.1), gamma2=rng.uniform(-0.1, 0.1)),
        dict(m=3, a_m=rng.uniform(0, 0.05), phi_m=rng.uniform(-np.pi, np.pi), **c),
        dict(m=4, a_m=rng.uniform(0, 0.05), phi_m=rng.uniform(-np.pi, np.pi), **c),
    ]
    light_mag = [
        dict(
            magnitude=rng.uniform(16, 19),
            R_sersic=rng.normal(0.8, 0.15),
            n_sersic=rng.uniform(1, 4),
            e1=rng.uniform(-0.1, 0.1),
            e2=rng.uniform(-0.1, 0.1),
            **c,
        )
    ]
    source_mag = [
        dict(
            magnitude=rng.uniform(20.0, 21.5),
            R_sersic=rng.uniform(0.15, 0.4),
            n_sersic=rng.uniform(0.8, 2.5),
            e1=rng.uniform(-0.3, 0.3),
            e2=rng.uniform(-0.3, 0.3),
            center_x=rng.uniform(-0.1, 0.1),
            center_y=rng.uniform(-0.1, 0.1),
        )
    ]
    sim = SimAPI(
        numpix=NUM_PIX,
        kwargs_single_band=dict(BAND, background_noise=None),
        kwargs_model=dict(lens_light_model_list=["SERSIC_ELLIPSE"], source_light_model_list=["SERSIC_ELLIPSE"]),
    )
    light, source, _ = sim.magnitude2amplitude(light_mag, source_mag, None)
    smooth = dict(
        lens_model_list=list(models),
        kwargs_lens=list(kwargs),
        source_light_model_list=["SERSIC_ELLIPSE"],
        kwargs_source=source,
    )
    # placement on bright pixels of the smooth, PSF-convolved image without lens light (reference, pixscale 0.2)
    image = render_image(smooth, num_pix=NUM_PIX, pixel_scale=PIXEL_SCALE, psf_kernel=psf, compile=False)
    rows, cols = np.nonzero(image > 0.2 * image.max())
    pick = rng.integers(0, len(rows), n_sub)
    x = (cols[pick] - (NUM_PIX - 1) / 2) * PIXEL_SCALE + rng.uniform(-PIXEL_SCALE / 2, PIXEL_SCALE / 2, n_sub)
    y = (rows[pick] - (NUM_PIX - 1) / 2) * PIXEL_SCALE + rng.uniform(-PIXEL_SCALE / 2, PIXEL_SCALE / 2, n_sub)
    mass = physics.sample_power_law_mass(rng, n_sub, 1e7, 1e10, -1.9)
    gamma = np.atleast_1d(_tn(rng, gamma_pop, 0.1 * gamma_pop, 1.01, 2.99, size=n_sub))
    theta_e = physics.epl_m2thetae(mass, gamma, physics.sigma_crit(z_l, z_s), physics.rho_crit(z_l))
    e1, e2 = rng.uniform(-0.2, 0.2, (2, n_sub))
    sub_kwargs = [
        dict(
            theta_E=float(theta_e[i]),
            gamma=float(gamma[i]),
            e1=float(e1[i]),
            e2=float(e2[i]),
            center_x=float(x[i]),
            center_y=float(y[i]),
        )
        for i in range(n_sub)
    ]
    scene = dict(
        lens_model_list=models + ["EPL"] * n_sub + ["CONVERGENCE"],
        kwargs_lens=kwargs + sub_kwargs + [dict(kappa=0.0)],
        source_light_model_list=["SERSIC_ELLIPSE"],
        kwargs_source=source,
        lens_light_model_list=["SERSIC_ELLIPSE"],
        kwargs_lens_light=light,
    )
    return scene, dict(n_macro=len(models), n_sub=n_sub)


def subhalos_of(scene: dict, n_macro: int) -> dict:
    return dict(lens_model_list=scene["lens_model_list"][n_macro:-1], kwargs_lens=scene["kwargs_lens"][n_macro:-1])


def with_sheet(scene: dict, kappa: float) -> dict:
    return dict(scene, kwargs_lens=scene["kwargs_lens"][:-1] + [dict(kappa=kappa)])


class Lenstronomy:
    """lenstronomy ImageModel on the benchmark grid and PSF; a new LensModel per image, as the reference."""

    def __init__(self, psf: np.ndarray) -> None:
        from lenstronomy.Data.imaging_data import ImageData
        from lenstronomy.Data.psf import PSF
        from lenstronomy.Util import util
        from lenstronomy.Util.simulation_util import data_configure_simple

        self.data = ImageData(**data_configure_simple(NUM_PIX, PIXEL_SCALE, BAND["exposure_time"], SIGMA_BKG))
        self.psf = PSF(psf_type="PIXEL", kernel_point_source=psf)
        self.x, self.y = util.make_grid(NUM_PIX, PIXEL_SCALE)

    def image(self, scene: dict, epl: str) -> np.ndarray:
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel

        lens = LensModel([epl if m == "EPL" else m for m in scene["lens_model_list"]])
        model = ImageModel(
            self.data,
            self.psf,
            lens,
            LightModel(["SERSIC_ELLIPSE"]),
            LightModel(["SERSIC_ELLIPSE"]),
            kwargs_numerics={"supersampling_factor": 1},
        )
        return model.image(scene["kwargs_lens"], scene["kwargs_source"], scene["kwargs_lens_light"])

    def pixel_mean_kappa(self, scene: dict, epl: str) -> float:
        from lenstronomy.LensModel.lens_model import LensModel

        lens = LensModel([epl if m == "EPL" else m for m in scene["lens_model_list"]])
        return float(np.mean(lens.kappa(self.x, self.y, scene["kwargs_lens"]))) if scene["kwargs_lens"] else 0.0

    def boundary_mean_kappa(self, scene: dict, epl: str) -> float:
        """⟨κ⟩ over the field from lenstronomy deflections on the boundary (Gauss's theorem), with the quadrature
        the simulator's lenstronomy backend uses (lensinfer.lensing.sheet.mean_convergence_from_deflections)."""
        from lenstronomy.LensModel.lens_model import LensModel

        from lensinfer.lensing.sheet import mean_convergence_from_deflections

        if not scene["kwargs_lens"]:
            return 0.0
        model = LensModel([epl])
        alphas = [lambda x, y, kw=kw: model.alpha(x, y, [kw]) for kw in scene["kwargs_lens"]]
        centres = [(kw["center_x"], kw["center_y"]) for kw in scene["kwargs_lens"]]
        return mean_convergence_from_deflections(alphas, centres, NUM_PIX * PIXEL_SCALE / 2)


class Caustics:
    """The bench scene in caustics (float64): ``LensSource`` over a ``SinglePlane`` of its lens classes, the subhalos
    in one ``BatchedPlane`` of EPLs, as caustics' documentation composes a simulator. Sérsic amplitudes are scaled by
    the pixel area: caustics' LensSource returns surface brightness, lenstronomy's ImageModel flux per pixel."""

    def __init__(self, psf: np.ndarray, chunk: int) -> None:
        import caustics

        self.caustics, self.psf, self.chunk = caustics, torch.as_tensor(psf, dtype=torch.float64), chunk
        self.cosmo = caustics.FlatLambdaCDM(name="cosmo")

    @staticmethod
    def _t(v) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float64)

    def lens(self, scene: dict, n_macro: int, z_l: float = 0.2, z_s: float = 0.6):
        """The scene's lens system (main EPL, shear, multipoles, subhalo EPLs, sheet) as one caustics SinglePlane.
        The redshifts only set the (unused) physical scaling: every parameter is in reduced (angular) units."""
        import warnings

        from caustics.lenses import EPL, BatchedPlane, ExternalShear, MassSheet, Multipole, SinglePlane

        kw, c = scene["kwargs_lens"], dict(cosmology=self.cosmo)
        main = kw[0]
        lenses = [EPL(name="main", **c, x0=main["center_x"], y0=main["center_y"], Rein=main["theta_E"],
                      t=main["gamma"] - 1.0, angle_system="e1_e2", e1=main["e1"], e2=main["e2"]),
                  ExternalShear(name="shear", **c, x0=0.0, y0=0.0, gamma_1=kw[1]["gamma1"], gamma_2=kw[1]["gamma2"])]
        lenses += [Multipole(name=f"multipole{k}", **c, x0=kw[k]["center_x"], y0=kw[k]["center_y"], m=kw[k]["m"],
                             a_m=kw[k]["a_m"], phi_m=kw[k]["phi_m"]) for k in (2, 3)]
        subs = kw[n_macro:-1]
        if subs:
            col = lambda key: self._t([s[key] for s in subs])  # noqa: E731
            sub = EPL(name="subhalo", **c, x0=col("center_x"), y0=col("center_y"), Rein=col("theta_E"),
                      t=col("gamma") - 1.0, angle_system="e1_e2", e1=col("e1"), e2=col("e2"))
            sub.to_dynamic()  # batched parameters, vmapped over by the BatchedPlane
            lenses.append(BatchedPlane(name="subhalos", **c, lens=sub, chunk_size=self.chunk))
        lenses.append(MassSheet(name="sheet", **c, x0=0.0, y0=0.0, kappa=kw[-1]["kappa"]))
        with warnings.catch_warnings():  # "static redshift overwritten by the plane": intended, one plane
            warnings.simplefilter("ignore", UserWarning)
            return SinglePlane(name="plane", **c, lenses=lenses, z_l=z_l, z_s=z_s)

    def _sersic(self, d: dict, name: str):
        from caustics.light import Sersic

        return Sersic(name=name, x0=d["center_x"], y0=d["center_y"], angle_system="e1_e2", e1=d["e1"], e2=d["e2"],
                      n=d["n_sersic"], Re=d["R_sersic"], Ie=d["amp"] * PIXEL_SCALE**2)

    def simulator(self, scene: dict, n_macro: int):
        sim = self.caustics.LensSource(lens=self.lens(scene, n_macro), source=self._sersic(scene["kwargs_source"][0], "source"),
                                       lens_light=self._sersic(scene["kwargs_lens_light"][0], "lens_light"),
                                       pixelscale=PIXEL_SCALE, pixels_x=NUM_PIX, psf=self.psf)
        sim.to(dtype=torch.float64)
        return sim

    def image(self, scene: dict, n_macro: int) -> np.ndarray:
        """Build the simulator for the scene and render it (caustics' whole path per image, like lenstronomy's)."""
        with torch.no_grad():
            return self.simulator(scene, n_macro)().numpy()

    def max_deflection_difference(self, scene: dict, n_macro: int) -> float:
        """max |α_caustics − α_lenstronomy| (arcsec) on the image's pixel centres, whole lens system."""
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.Util import util

        x, y = util.make_grid(NUM_PIX, PIXEL_SCALE)
        with torch.no_grad():
            ax, ay = self.lens(scene, n_macro).reduced_deflection_angle(x=self._t(x), y=self._t(y))
        bx, by = LensModel(scene["lens_model_list"]).alpha(x, y, scene["kwargs_lens"])
        return float(np.max(np.hypot(ax.numpy() - bx, ay.numpy() - by)))


#: caustics and lenstronomy deflections must agree to this (arcsec; 2.5e-4 of a 0.04″ pixel): caustics sums 18
#: terms of the Tessore & Metcalf series by default (n_iter), ~1e-7–1e-6″ from the exact value for the bench ellipticities
CAUSTICS_DALPHA_TOL = 1e-5


def caustics_available() -> bool:
    try:
        import caustics  # noqa: F401
    except ImportError:
        return False
    return True


def timed(fn, repeats: int, warm: bool = True) -> tuple[list[float], object]:
    """Wall times of ``repeats`` calls, after one untimed call (kernel variants for new shapes compile there)."""
    out, times = fn() if warm else None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def simulator_throughput(config_path: Path, backend: str, n_images: int, dataset: str = "train") -> dict:
    """Whole-image simulator time per backend: ``simulate_image`` (all draws, smooth image, sheet, full image,
    noise) on ``n_images`` seeds of ``dataset``, after two untimed warm-up images (numba JIT / torch.compile)."""
    from lensinfer.config import load_config
    from lensinfer.seeds import image_rng, image_seeds
    from lensinfer.simulate.renderers import make_renderer
    from lensinfer.simulate.shard import line_of_sight, population_of, simulate_image, source_catalog

    cfg = load_config(config_path)
    cfg["renderer"]["backend"] = backend
    renderer = make_renderer(cfg)
    population = population_of(cfg, dataset)
    extra = dict(cosmos=source_catalog(cfg, cfg["datasets"][dataset].get("source_split", "train")),
                 los=line_of_sight(cfg))
    seeds = image_seeds(int(cfg["seed"]), dataset, 0, n_images + 2)

    def one(i: int) -> None:
        simulate_image(image_rng(seeds[i]), renderer=renderer, config=cfg, population=population, global_index=i,
                       **extra)

    t0 = time.perf_counter()
    for i in range(n_images, n_images + 2):
        one(i)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n_images):
        one(i)
    return {"ms_per_image": 1e3 * (time.perf_counter() - t0) / n_images, "warmup_s": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-sub", type=int, nargs="+", default=[0, 100, 500, 1500])
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of the torch and numba paths")
    parser.add_argument("--reference-repeats", type=int, default=2, help="repetitions of the (slow) reference path")
    parser.add_argument("--batch", type=int, default=4, help="scenes per render_batch call for (b') and (c)")
    parser.add_argument("--gamma", type=float, default=2.0, help="population slope γ of the subhalos")
    parser.add_argument("--psf", choices=["hst", "gaussian"], default="hst")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 reference repetition, 3 of the others, batch 2")
    parser.add_argument("--sim-config", type=Path, default=ROOT / "config" / "config.yaml",
                        help="config whose 'train' images time the whole simulator per renderer.backend")
    parser.add_argument("--sim-images", type=int, default=20, help="images per backend for the simulator timing (0: skip)")
    parser.add_argument("--caustics-repeats", type=int, default=2, help="repetitions of the caustics path (e)")
    parser.add_argument("--caustics-chunk", type=int, default=100,
                        help="subhalos per vmapped chunk of caustics' BatchedPlane (memory bound)")
    parser.add_argument("--no-caustics", action="store_true", help="skip the caustics column")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.reference_repeats, args.batch, args.caustics_repeats = 3, 1, 2, 1
    psf = psf_kernel(args.psf)
    use_caustics = not args.no_caustics and caustics_available()
    cz = Caustics(psf, args.caustics_chunk) if use_caustics else None
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    rng = np.random.default_rng(args.seed)
    lt = Lenstronomy(psf)
    cuda = torch.cuda.is_available()
    print(
        f"# one CPU thread (torch {torch.get_num_threads()}, numba/BLAS via env = 1); psf {args.psf} {psf.shape}; "
        f"σ_bkg = {SIGMA_BKG:.5f} e/s; CUDA: {'yes' if cuda else 'no (path (c) skipped)'}; caustics: "
        f"{'yes' if cz else 'no (column (e) skipped: ' + ('--no-caustics' if args.no_caustics else 'not installed') + ')'}",
        flush=True,
    )

    t0 = time.perf_counter()
    warm_scene, warm_info = draw_scene(rng, 50, args.gamma, psf)
    warm_kappa = mean_convergence(
        subhalos_of(warm_scene, warm_info["n_macro"]), num_pix=NUM_PIX, pixel_scale=PIXEL_SCALE
    )
    render_image(with_sheet(warm_scene, -warm_kappa), num_pix=NUM_PIX, pixel_scale=PIXEL_SCALE, psf_kernel=psf)
    warm_torch = time.perf_counter() - t0
    t0 = time.perf_counter()
    lt.image(warm_scene, "EPL_NUMBA")
    warm_numba = time.perf_counter() - t0
    print(
        f"# warm-up (not timed below): torch.compile {warm_torch:.1f} s, numba JIT/cache {warm_numba:.1f} s", flush=True
    )

    header = (
        f"{'N_sub':>6} {'(a) ref ms':>11} {'(d) numba ms':>13} {'(b) ours ms':>12} {'(b′) batch ms':>14} {'(c) cuda ms':>12} "
        f"{'a/b':>7} {'d/b':>6} {'max|Δ|/σ':>9} {'κ field':>9} {'κ pixels':>9} {'(e) caustics ms':>16} {'peer/b':>7} "
        f"{'caus |Δα|″':>10}"
    )
    print(header, flush=True)
    result: dict[str, object] = {
        "threads": 1,
        "psf": args.psf,
        "gamma_pop": args.gamma,
        "sigma_bkg": SIGMA_BKG,
        "cuda": cuda,
        "repeats": args.repeats,
        "reference_repeats": args.reference_repeats,
        "caustics": bool(cz),
        "caustics_repeats": args.caustics_repeats if cz else 0,
        "caustics_chunk": args.caustics_chunk,
    }
    worst = 0.0
    for n_sub in args.n_sub:
        scene, info = draw_scene(rng, n_sub, args.gamma, psf)
        sub = subhalos_of(scene, info["n_macro"])

        def ours(scene=scene, sub=sub):
            kappa = mean_convergence(sub, num_pix=NUM_PIX, pixel_scale=PIXEL_SCALE) if n_sub else 0.0
            return (
                render_image(with_sheet(scene, -kappa), num_pix=NUM_PIX, pixel_scale=PIXEL_SCALE, psf_kernel=psf),
                kappa,
            )

        t_ours, (img_ours, kappa_field) = timed(ours, args.repeats)
        final = with_sheet(scene, -kappa_field)

        def reference(final=final, sub=sub):
            kappa_pix = lt.pixel_mean_kappa(sub, "EPL")  # κ map for the sheet
            lt.pixel_mean_kappa(
                dict(lens_model_list=final["lens_model_list"], kwargs_lens=final["kwargs_lens"]), "EPL"
            )  # unused
            return lt.image(final, "EPL"), kappa_pix  # same sheet κ as ours (see module docstring)

        def numba(scene=scene, sub=sub):
            kappa = lt.boundary_mean_kappa(sub, "EPL_NUMBA")
            return lt.image(with_sheet(scene, -kappa), "EPL_NUMBA")

        t_ref, (img_ref, kappa_pix) = timed(reference, args.reference_repeats, warm=False)  # nothing to warm
        t_numba, img_numba = timed(numba, args.repeats)
        t_caus = img_caus = None
        if cz is not None:  # the whole caustics path per image: build the simulator, render (nothing to compile)
            t_caus, img_caus = timed(lambda final=final: cz.image(final, info["n_macro"]), args.caustics_repeats,
                                     warm=not args.quick)
            dalpha = cz.max_deflection_difference(final, info["n_macro"])
            if dalpha > CAUSTICS_DALPHA_TOL:
                print(f"# WARNING: caustics deflections differ from lenstronomy's by {dalpha:.2e}″ "
                      f"(> {CAUSTICS_DALPHA_TOL:g}″) at N_sub = {n_sub}", flush=True)
        batch = [draw_scene(rng, n_sub, args.gamma, psf)[0] for _ in range(args.batch - 1)]
        batch = [final] + [
            with_sheet(
                s,
                (
                    -mean_convergence(subhalos_of(s, info["n_macro"]), num_pix=NUM_PIX, pixel_scale=PIXEL_SCALE)
                    if n_sub
                    else 0.0
                ),
            )
            for s in batch
        ]
        t_batch, imgs_batch = timed(
            lambda: render_batch(batch, num_pix=NUM_PIX, pixel_scale=PIXEL_SCALE, psf_kernel=psf), args.repeats
        )
        t_cuda = None
        if cuda:

            def on_gpu():
                out = render_batch(batch, num_pix=NUM_PIX, pixel_scale=PIXEL_SCALE, psf_kernel=psf, device="cuda")
                torch.cuda.synchronize()
                return out

            t_cuda, imgs_cuda = timed(on_gpu, args.repeats)
            worst = max(worst, float(np.abs(imgs_cuda - imgs_batch).max() / SIGMA_BKG))
        diff = float(np.abs(img_ours - img_ref).max() / SIGMA_BKG)
        diff_numba = float(np.abs(img_ours - img_numba).max() / SIGMA_BKG)
        diff_batch = float(np.abs(imgs_batch[0] - img_ours).max() / SIGMA_BKG)
        worst = max(worst, diff, diff_batch)
        ms = lambda t: 1e3 * float(np.median(t))  # noqa: E731
        row = {
            "ms_reference": ms(t_ref),
            "ms_lenstronomy_numba": ms(t_numba),
            "ms_ours": ms(t_ours),
            "ms_ours_batched_cpu": ms(t_batch) / len(batch),
            "ms_ours_cuda": ms(t_cuda) / len(batch) if t_cuda else None,
            "ms_reference_min": 1e3 * min(t_ref),
            "ms_lenstronomy_numba_min": 1e3 * min(t_numba),
            "ms_ours_min": 1e3 * min(t_ours),
        }
        row["speedup"] = row["ms_reference"] / row["ms_ours"]
        peers = {"lenstronomy_epl": row["ms_reference"], "lenstronomy_epl_numba": row["ms_lenstronomy_numba"]}
        if t_caus is not None:
            row["ms_caustics"] = ms(t_caus)
            row["ms_caustics_min"] = 1e3 * min(t_caus)
            row["caustics_max_dalpha_arcsec"] = dalpha
            row["caustics_deflections_agree"] = dalpha <= CAUSTICS_DALPHA_TOL
            row["max_abs_diff_over_sigma_caustics"] = float(np.abs(img_caus - img_ours).max() / SIGMA_BKG)
            peers["caustics"] = row["ms_caustics"]
        row["best_peer"] = min(peers, key=peers.get)
        row["speedup_vs_best_peer"] = peers[row["best_peer"]] / row["ms_ours"]
        row["speedup_vs_numba"] = row["ms_lenstronomy_numba"] / row["ms_ours"]
        row["max_abs_diff_over_sigma"] = diff
        row["kappa_sheet_field"], row["kappa_sheet_pixels"] = kappa_field, kappa_pix
        row["max_abs_diff_over_sigma_vs_numba"] = diff_numba
        for key, value in row.items():
            result[f"{key}_{n_sub}"] = value
        cuda_ms = f"{row['ms_ours_cuda']:12.2f}" if t_cuda else f"{'skipped':>12}"
        caus = (f"{row['ms_caustics']:16.0f}" if t_caus is not None else f"{'skipped':>16}")
        caus_da = f"{row['caustics_max_dalpha_arcsec']:10.1e}" if t_caus is not None else f"{'-':>10}"
        print(
            f"{n_sub:6d} {row['ms_reference']:11.0f} {row['ms_lenstronomy_numba']:13.0f} {row['ms_ours']:12.1f} "
            f"{row['ms_ours_batched_cpu']:14.1f} {cuda_ms} {row['speedup']:7.0f} {row['speedup_vs_numba']:6.1f} {diff:9.2e} "
            f"{kappa_field:9.5f} {kappa_pix:9.5f} {caus} {row['speedup_vs_best_peer']:7.1f} {caus_da}",
            flush=True,
        )
    result["max_abs_diff_over_sigma"] = worst
    n_sim = min(args.sim_images, 5) if args.quick else args.sim_images
    if n_sim > 0:  # whole simulator (simulate_image) per renderer backend
        result["simulator_config"] = str(args.sim_config)
        for backend in ("lenstronomy", "torch"):
            sim = simulator_throughput(args.sim_config, backend, n_sim)
            result[f"simulator_ms_per_image_{backend}"] = sim["ms_per_image"]
            result[f"simulator_warmup_s_{backend}"] = sim["warmup_s"]
            print(f"# simulator ({args.sim_config.name}, {backend}): {sim['ms_per_image']:.1f} ms/image "
                  f"(warm-up {sim['warmup_s']:.1f} s)", flush=True)
    result["warmup_s_torch_compile"], result["warmup_s_numba"] = warm_torch, warm_numba
    result["command"] = " ".join(["python"] + sys.argv)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
