"""Derived quantities of macro-model posteriors: multiple-image positions and time delays (lenstronomy 1.14.0).

For every posterior sample of the smooth lens model — EPL main deflector (θE, γ, e1, e2, centre), external shear
(γ1, γ2), optional m = 3, 4 multipoles — and a point source (the posterior's source centre or a fixed position),
the lens equation β = θ − α(θ) is solved with lenstronomy's ``LensEquationSolver`` and the time delays follow from
the Fermat potential, as HOLISMOKES IV does from its network's SIE predictions (Schuldt et al. 2021, A&A 646,
A126, §6; seed 004):

    t(θ) = (D_Δt / c) · φ(θ; β),   φ(θ; β) = |θ − β|² / 2 − ψ(θ),   D_Δt = (1 + z_l) D_l D_s / D_ls

(Refsdal 1964; Schneider, Ehlers & Falco 1992, §5.3), angles in radians and D in metres for seconds. Images are
labelled consistently across samples: image i of every sample is the one matched (Hungarian assignment on
positions) to image i of a reference model (the posterior median), whose images are sorted by arrival time;
Δt_i = t_i − t_0 is relative to image 0, the first to arrive in the reference model (so Δt_i ≥ 0 for the
reference, and can change sign in samples where two images' order flips). Distances come from the
configured astropy cosmology through :mod:`lensinfer.physics` (Planck18 by default).

Check value (SIS: EPL with γ = 2, e = 0, no shear; source at radius β < θE): images at radii θE ± β on the line
through the source, Fermat potentials −θE²/2 ∓ θE β, so the inner image arrives later by

    Δt_SIS = (D_Δt / c) · 2 θE β = (D_Δt / 2c) (θ_A² − θ_B²)

(Witt, Mao & Keeton 2000, ApJ 544, 98, eq. 8 for isothermal lenses; ``tests/test_derived.py`` checks both).

Image multiplicity can differ between samples (a source near a caustic gives 2 or 4 images). Summaries are
computed over the samples with the most frequent image count only; how many samples had which count is reported
in ``multiplicity`` (and summaries of the other counts under ``other_multiplicities``), never mixed.

Cost: ~1–2 ms per sample for EPL (+ shear) with the analytical solver (Tessore-type 1-D solve), ~30–50 ms per
sample with multipoles (lenstronomy's grid + gradient solver); ``max_samples`` (default 1000) bounds it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import physics

__all__ = [
    "time_delay_distance",
    "fermat_to_days",
    "MacroModel",
    "solve_images",
    "derived_quantities",
    "write_derived",
    "lens_redshifts",
    "derive_observations",
]

_DAY_S = 86400.0

#: defaults of the macro-model parameters that are neither posterior columns nor ``fixed``
DEFAULTS: dict[str, float] = {
    "lens_gamma": 2.0, "lens_e1": 0.0, "lens_e2": 0.0, "lens_center_x": 0.0, "lens_center_y": 0.0,
    "shear_gamma1": 0.0, "shear_gamma2": 0.0,
}
_EPL_KEYS = ("theta_E", "gamma", "e1", "e2", "center_x", "center_y")


def time_delay_distance(z_lens: float | np.ndarray, z_source: float | np.ndarray,
                        cosmology: str = "planck18") -> float | np.ndarray:
    """D_Δt = (1 + z_l) D_l D_s / D_ls in Mpc (angular-diameter distances of :func:`lensinfer.physics.get_cosmology`).

    Scalars go through :class:`lensinfer.physics.LensPlane`; arrays are evaluated vectorised with the same
    astropy cosmology.
    """
    if np.ndim(z_lens) == 0 and np.ndim(z_source) == 0:
        plane = physics.LensPlane(float(z_lens), float(z_source), cosmology)
        return (1.0 + plane.z_lens) * plane.d_d * plane.d_s / plane.d_ds
    from astropy import units as u

    zl, zs = np.broadcast_arrays(np.asarray(z_lens, float), np.asarray(z_source, float))
    if np.any(zs <= zl) or np.any(zl <= 0):
        raise ValueError("need 0 < z_lens < z_source for every sample")
    cosmo = physics.get_cosmology(cosmology)
    d_d = cosmo.angular_diameter_distance(zl).to_value(u.Mpc)
    d_s = cosmo.angular_diameter_distance(zs).to_value(u.Mpc)
    d_ds = cosmo.angular_diameter_distance(zl, zs).to_value(u.Mpc)
    return (1.0 + zl) * d_d * d_s / d_ds


def fermat_to_days(fermat_arcsec2: float | np.ndarray, d_dt_mpc: float | np.ndarray) -> float | np.ndarray:
    """Time (days) of a Fermat-potential difference (arcsec²) for a time-delay distance (Mpc): D_Δt φ / c."""
    return np.asarray(d_dt_mpc) * physics.MPC_M / physics.C_SI * np.asarray(fermat_arcsec2) * physics.ARCSEC_RAD**2 / _DAY_S


class MacroModel:
    """Maps parameter vectors (simulator column names) to lenstronomy lens kwargs, and solves for the images.

    Components: 'EPL' (``lens_theta_E`` required; ``lens_gamma``, ``lens_e1``, ``lens_e2``, ``lens_center_x/y``),
    'SHEAR' at (0, 0) when ``shear_gamma1``/``shear_gamma2`` is a column or fixed, and one 'MULTIPOLE' per
    m ∈ {3, 4} with ``multipole{m}_a`` (and ``multipole{m}_phi``, default 0) centred on the lens — the simulator's
    conventions (``lensinfer.simulate.scene.draw_macro``). A parameter is read from the sample if it is a column,
    else from ``fixed``, else from :data:`DEFAULTS`.
    """

    def __init__(self, columns: Sequence[str], fixed: Mapping[str, float] | None = None) -> None:
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LensModel.Solver.lens_equation_solver import LensEquationSolver

        self.columns = [str(c) for c in columns]
        self.fixed = dict(fixed or {})
        self._index = {c: j for j, c in enumerate(self.columns)}
        if not self.has("lens_theta_E"):
            raise ValueError("the macro model needs lens_theta_E (a posterior column or a fixed value)")
        self.model_list = ["EPL"]
        if self.has("shear_gamma1") or self.has("shear_gamma2"):
            self.model_list.append("SHEAR")
        self.multipoles = [m for m in (3, 4) if self.has(f"multipole{m}_a")]
        self.model_list += ["MULTIPOLE"] * len(self.multipoles)
        self.lens_model = LensModel(self.model_list)
        self.solver = LensEquationSolver(self.lens_model)
        from lenstronomy.LensModel.Solver.lens_equation_solver import analytical_lens_model_support

        self.analytical = analytical_lens_model_support(self.model_list)

    def has(self, name: str) -> bool:
        return name in self._index or name in self.fixed

    def value(self, theta: np.ndarray, name: str, default: float | None = None) -> float:
        if name in self._index:
            return float(theta[self._index[name]])
        if name in self.fixed:
            return float(self.fixed[name])
        if default is None and name not in DEFAULTS:
            raise KeyError(f"parameter {name!r} is neither a column nor fixed")
        return float(DEFAULTS.get(name, default if default is not None else 0.0))

    def kwargs_lens(self, theta: np.ndarray) -> list[dict[str, float]]:
        kw = [{k: self.value(theta, f"lens_{k}") for k in _EPL_KEYS}]
        if "SHEAR" in self.model_list:
            kw.append({"gamma1": self.value(theta, "shear_gamma1"), "gamma2": self.value(theta, "shear_gamma2"),
                       "ra_0": 0.0, "dec_0": 0.0})
        for m in self.multipoles:
            kw.append({"m": m, "a_m": self.value(theta, f"multipole{m}_a"),
                       "phi_m": self.value(theta, f"multipole{m}_phi", 0.0),
                       "center_x": kw[0]["center_x"], "center_y": kw[0]["center_y"]})
        return kw


def solve_images(model: MacroModel, kwargs_lens: list[dict[str, float]], beta_x: float, beta_y: float, *,
                 solver: str = "auto", magnification_limit: float | None = 0.1,
                 search_window: float | None = None, min_distance: float = 0.05,
                 tolerance: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image positions (arcsec) of a point source at (β_x, β_y) and their Fermat potentials (arcsec²),
    sorted by arrival time.

    ``solver``: ``"analytical"`` (EPL + shear only; lenstronomy's 1-D solver, which also returns the
    demagnified central image), ``"lenstronomy"`` (grid search + gradient root finder, any model; grid spacing
    ``min_distance``, half-width ``search_window`` (default max(5", 4 θE))), or ``"auto"``:
    analytical when supported, falling back to the numerical solver if it returns no image or an image that
    does not map back to the source within ``tolerance`` (e.g. the exactly circular EPL without shear, where
    lenstronomy 1.14.0's analytical solver returns nothing). Images with |μ| < ``magnification_limit`` are
    dropped (the unobservable central image of γ < 2 profiles), consistently for both solvers.
    """
    x = y = np.zeros(0)
    if solver in ("auto", "analytical") and model.analytical:
        try:
            x, y = model.solver.image_position_from_source(beta_x, beta_y, kwargs_lens, solver="analytical",
                                                           magnification_limit=magnification_limit)
        except Exception:  # noqa: BLE001 — any failure of the special-purpose solver → numerical fallback
            x = y = np.zeros(0)
        x, y = np.atleast_1d(x).astype(float), np.atleast_1d(y).astype(float)
        if solver == "auto" and x.size:
            bx, by = model.lens_model.ray_shooting(x, y, kwargs_lens)
            if not np.all(np.hypot(bx - beta_x, by - beta_y) <= tolerance):  # also catches NaN solutions
                x = y = np.zeros(0)
    elif solver == "analytical":
        raise ValueError(f"the analytical solver does not support {model.model_list}")
    if solver == "lenstronomy" or (solver == "auto" and x.size == 0):
        epl = kwargs_lens[0]
        window = search_window if search_window is not None else max(5.0, 4.0 * epl["theta_E"])
        # the grid is offset by a fraction of its spacing: grid points exactly on a symmetry axis of the lens
        # (e.g. the SIS centre) make lenstronomy 1.14.0's initial-guess selection return no image at all
        x, y = model.solver.image_position_from_source(
            beta_x, beta_y, kwargs_lens, solver="lenstronomy", search_window=window, min_distance=min_distance,
            precision_limit=1e-10, num_iter_max=100, x_center=epl["center_x"] + 0.37 * min_distance,
            y_center=epl["center_y"] + 0.23 * min_distance, magnification_limit=magnification_limit)
        x, y = np.atleast_1d(x).astype(float), np.atleast_1d(y).astype(float)
    elif solver not in ("auto", "analytical"):
        raise ValueError(f"solver must be 'auto', 'analytical' or 'lenstronomy', got {solver!r}")
    if x.size == 0:
        return x, y, np.zeros(0)
    phi = np.atleast_1d(model.lens_model.fermat_potential(x, y, kwargs_lens, beta_x, beta_y)).astype(float)
    order = np.argsort(phi, kind="stable")
    return x[order], y[order], phi[order]


def _pct(v: np.ndarray) -> dict[str, float]:
    p16, p50, p84 = np.percentile(v, [16, 50, 84])
    return {"median": float(p50), "p16": float(p16), "p84": float(p84), "mean": float(np.mean(v)),
            "std": float(np.std(v))}


def _summarise(xs: np.ndarray, ys: np.ndarray, dts: np.ndarray, dphi: np.ndarray) -> list[dict[str, Any]]:
    """Per-image summaries of (M, n) arrays of positions, delays (days) and Fermat differences (arcsec²)."""
    out = []
    for i in range(xs.shape[1]):
        cov = np.cov(np.stack([xs[:, i], ys[:, i]])) if xs.shape[0] > 1 else np.zeros((2, 2))
        out.append({"index": i, "x": _pct(xs[:, i]), "y": _pct(ys[:, i]), "dt_days": _pct(dts[:, i]),
                    "dfermat_arcsec2": _pct(dphi[:, i]), "cov_xy": np.atleast_2d(cov).tolist()})
    return out


def derived_quantities(samples: np.ndarray, columns: Sequence[str], *, z_lens: float | None = None,
                       z_source: float | None = None, cosmology: str = "planck18",
                       source_position: tuple[float, float] | None = None, max_samples: int | None = 1000,
                       seed: int = 0, fixed: Mapping[str, float] | None = None, solver: str = "auto",
                       magnification_limit: float | None = 0.1, store_samples: int = 300,
                       truth: np.ndarray | None = None) -> dict[str, Any]:
    """Image positions and time delays of every posterior sample of one lens, with summaries.

    Parameters
    ----------
    samples : (S, P) posterior samples of one lens (physical units), columns named as the simulator's.
    z_lens, z_source : redshifts; if ``None`` they are taken per sample from the ``z_lens``/``z_source`` columns
        (then D_Δt varies with the sample), else from ``fixed``.
    cosmology : astropy realisation name (the config's ``cosmology``), via :mod:`lensinfer.physics`.
    source_position : fixed point-source position (arcsec, absolute coordinates as the simulator's
        ``source_center_x/y``); default: the samples' ``source_center_x``/``source_center_y`` columns.
    max_samples : random subset (``numpy.random.default_rng(seed)``) of at most this many samples; identical
        parameter rows are solved once.
    fixed : values of macro parameters that are not posterior columns (see :class:`MacroModel`).
    solver, magnification_limit : see :func:`solve_images`.
    store_samples : how many per-sample (x, y, Δt) of the reference multiplicity to keep (for plots).
    truth : (P,) true parameters, if known: their image positions and delays are added under ``truth``.

    Returns
    -------
    dict with ``n_samples_used``, ``z_lens``/``z_source`` (or ``"per-sample"``), ``time_delay_distance_mpc``
    (median), ``multiplicity`` {``counts``, ``fractions``, ``reference``, ``n_used``, ``n_excluded``}, ``images``
    (per image, labelled as the arrival-ordered images of the posterior-median model: x, y, Δt (days, relative to
    image 0), Δφ: median/p16/p84/mean/std, and cov_xy),
    ``other_multiplicities`` ({n: images} for the other counts), ``samples`` (x, y, dt_days lists, at most
    ``store_samples``), ``truth`` (if given), ``solver``, ``seconds``.
    """
    t0 = time.perf_counter()
    samples = np.atleast_2d(np.asarray(samples, dtype=float))
    cols = [str(c) for c in columns]
    if samples.shape[1] != len(cols):
        raise ValueError(f"samples have {samples.shape[1]} parameters but {len(cols)} columns")
    fixed = dict(fixed or {})
    if source_position is not None:
        fixed["source_center_x"], fixed["source_center_y"] = map(float, source_position)
        drop = [c for c in ("source_center_x", "source_center_y") if c in cols]
        if drop:
            keep = [j for j, c in enumerate(cols) if c not in drop]
            samples, cols = samples[:, keep], [cols[j] for j in keep]
            if truth is not None:
                truth = np.asarray(truth, float)[keep]
    for name, val in (("z_lens", z_lens), ("z_source", z_source)):
        if val is not None:
            fixed[name] = float(val)
            if name in cols:
                keep = [j for j, c in enumerate(cols) if c != name]
                samples, cols = samples[:, keep], [cols[j] for j in keep]
                if truth is not None:
                    truth = np.asarray(truth, float)[keep]
    model = MacroModel(cols, fixed)
    for needed in ("source_center_x", "source_center_y", "z_lens", "z_source"):
        if not model.has(needed):
            raise ValueError(f"{needed} is neither a posterior column nor given (source_position / z_lens / z_source)")

    rng = np.random.default_rng(seed)
    s = samples.shape[0]
    take = np.sort(rng.choice(s, size=max_samples, replace=False)) if max_samples and s > max_samples else np.arange(s)
    used = samples[take]
    uniq, inverse = np.unique(used, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)

    def per_row(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bx, by = model.value(theta, "source_center_x"), model.value(theta, "source_center_y")
        return solve_images(model, model.kwargs_lens(theta), bx, by, solver=solver,
                            magnification_limit=magnification_limit)

    solved = [per_row(theta) for theta in uniq]
    zl = np.array([model.value(t, "z_lens") for t in uniq])
    zs = np.array([model.value(t, "z_source") for t in uniq])
    if np.all(zl == zl[0]) and np.all(zs == zs[0]):
        d_dt_u = np.full(len(uniq), float(time_delay_distance(float(zl[0]), float(zs[0]), cosmology)))
    else:
        d_dt_u = np.asarray(time_delay_distance(zl, zs, cosmology), dtype=float)

    n_img = np.array([solved[k][0].size for k in inverse])
    values, counts = np.unique(n_img, return_counts=True)
    order = np.lexsort((-values, -counts))  # most frequent; ties → more images
    ref = int(values[order[0]])

    # Consistent image labels: the images of each sample are matched (Hungarian assignment on positions) to the
    # arrival-ordered images of a reference model with the same multiplicity — the posterior-median parameters
    # if they give that many images, else the sample of that multiplicity nearest to the median (in units of the
    # posterior widths). Sorting each sample by its own arrival times would swap images of similar delay.
    from scipy.optimize import linear_sum_assignment

    median_theta = np.median(used, axis=0)
    width = np.std(used, axis=0)
    width[width == 0] = 1.0

    def reference(nsel: int) -> tuple[np.ndarray, np.ndarray]:
        x, y, _ = per_row(median_theta)
        if x.size == nsel:
            return x, y
        cand = np.flatnonzero(np.array([sol[0].size for sol in solved]) == nsel)
        best = cand[np.argmin(np.sum(((uniq[cand] - median_theta) / width) ** 2, axis=1))]
        return solved[best][0], solved[best][1]

    def block(nsel: int) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray, np.ndarray]:
        xr, yr = reference(nsel)
        labelled: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for k in np.unique(inverse[n_img == nsel]):
            x, y, ph = solved[k]
            rows_, cols_ = linear_sum_assignment(np.hypot(x[:, None] - xr[None], y[:, None] - yr[None]))
            perm = rows_[np.argsort(cols_)]
            labelled[int(k)] = (x[perm], y[perm], ph[perm])
        rows = inverse[n_img == nsel]
        xs = np.array([labelled[k][0] for k in rows]).reshape(len(rows), nsel)
        ys = np.array([labelled[k][1] for k in rows]).reshape(len(rows), nsel)
        ph = np.array([labelled[k][2] for k in rows]).reshape(len(rows), nsel)
        dphi = ph - ph[:, :1]
        dts = np.asarray(fermat_to_days(dphi, d_dt_u[rows][:, None]))
        return _summarise(xs, ys, dts, dphi), xs, ys, dts

    empty = np.zeros((0, 0))
    images, xs, ys, dts = block(ref) if ref > 0 else ([], empty, empty, empty)
    others = {str(int(v)): block(int(v))[0] for v in values if int(v) != ref and int(v) > 0}
    m = len(take)
    result: dict[str, Any] = {
        "n_samples_total": int(s),
        "n_samples_used": int(m),
        "n_unique_models": int(len(uniq)),
        "z_lens": float(fixed["z_lens"]) if "z_lens" in fixed and "z_lens" not in cols else "per-sample",
        "z_source": float(fixed["z_source"]) if "z_source" in fixed and "z_source" not in cols else "per-sample",
        "cosmology": cosmology,
        "time_delay_distance_mpc": float(np.median(d_dt_u[inverse])),
        "lens_models": model.model_list,
        "source_position": list(source_position) if source_position is not None else "posterior",
        "solver": solver if not (solver == "auto") else ("auto(analytical)" if model.analytical else "auto(lenstronomy)"),
        "magnification_limit": magnification_limit,
        "multiplicity": {
            "counts": {str(int(v)): int(c) for v, c in zip(values, counts)},
            "fractions": {str(int(v)): float(c / m) for v, c in zip(values, counts)},
            "reference": ref,
            "n_used": int(np.sum(n_img == ref)),
            "n_excluded": int(np.sum(n_img != ref)),
        },
        "images": images,
        "other_multiplicities": others,
        "samples": {"x": xs[:store_samples].tolist(), "y": ys[:store_samples].tolist(),
                    "dt_days": dts[:store_samples].tolist()},
    }
    if truth is not None and np.all(np.isfinite(truth)):
        truth = np.asarray(truth, float)
        kw = model.kwargs_lens(truth)
        bx, by = model.value(truth, "source_center_x"), model.value(truth, "source_center_y")
        x, y, phi = solve_images(model, kw, bx, by, solver=solver, magnification_limit=magnification_limit)
        if x.size == ref and ref > 0:  # same labels as the posterior summaries
            xr, yr = reference(ref)
            rows_, cols_ = linear_sum_assignment(np.hypot(x[:, None] - xr[None], y[:, None] - yr[None]))
            perm = rows_[np.argsort(cols_)]
            x, y, phi = x[perm], y[perm], phi[perm]
        d_dt = float(time_delay_distance(model.value(truth, "z_lens"), model.value(truth, "z_source"), cosmology))
        result["truth"] = {"n_images": int(x.size), "x": x.tolist(), "y": y.tolist(),
                           "dt_days": np.asarray(fermat_to_days(phi - phi[0], d_dt)).tolist() if x.size else [],
                           "time_delay_distance_mpc": d_dt}
    result["seconds"] = time.perf_counter() - t0
    return result


def _per_lens(value: float | Sequence[float] | Mapping[str, float] | None, i: int, name: str) -> float | None:
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    if isinstance(value, Mapping):
        return float(value[name]) if name in value else None
    return float(value[i])


def write_derived(samples_npz: str | Path, out_json: str | Path, *,
                  z_lens: float | Sequence[float] | Mapping[str, float] | None = None,
                  z_source: float | Sequence[float] | Mapping[str, float] | None = None,
                  cosmology: str = "planck18", source_position: tuple[float, float] | None = None,
                  max_samples: int | None = 1000, seed: int = 0, indices: Sequence[int] | None = None,
                  fixed: Mapping[str, float] | None = None, solver: str = "auto",
                  magnification_limit: float | None = 0.1, store_samples: int = 300) -> dict[str, Any]:
    """:func:`derived_quantities` for the lenses of a posterior-sample ``.npz`` (keys as
    :func:`lensinfer.diagnostics.load_posterior_samples`), written to one JSON ``{"lenses": {name: result}}``.

    ``indices`` selects lenses (default: all — mind the cost on a 2500-lens test set); redshifts may be a scalar,
    a per-lens sequence (over the selected ``indices``' original positions) or a mapping by lens name, and
    default to the posterior columns. The truths in the file, if finite, give each lens's ``truth`` block.
    Each lens uses seed ``seed + index``.
    """
    from .diagnostics import json_safe, load_posterior_samples

    post = load_posterior_samples(samples_npz)
    idx = list(range(post.n_lenses)) if indices is None else [int(i) for i in indices]
    lenses: dict[str, Any] = {}
    for i in idx:
        name = post.names[i]
        lenses[name] = derived_quantities(
            post.samples[i], post.columns, z_lens=_per_lens(z_lens, i, name), z_source=_per_lens(z_source, i, name),
            cosmology=cosmology, source_position=source_position, max_samples=max_samples, seed=seed + i,
            fixed=fixed, solver=solver, magnification_limit=magnification_limit, store_samples=store_samples,
            truth=post.truths[i] if np.all(np.isfinite(post.truths[i])) else None)
    result = {"source": str(samples_npz), "cosmology": cosmology, "columns": post.columns, "lenses": lenses}
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(result), indent=1) + "\n")
    return result


def lens_redshifts(names: Sequence[str], *, configured: Mapping[str, Sequence[float]] | None = None,
                   truth_paths: Sequence[str | Path] = ()) -> tuple[dict[str, float], dict[str, float]]:
    """(z_lens, z_source) by lens name: ``derived.redshifts`` of the config first (spectroscopic redshifts of real
    lenses), then the ``truth.json`` of mock observations (their simulated redshifts play the part of measured
    ones). Lenses with neither are left out, so :func:`derived_quantities` falls back on the posterior columns."""
    configured = dict(configured or {})
    unknown = sorted(set(configured) - set(names))
    if unknown:
        raise ValueError(f"derived.redshifts: unknown lenses {unknown}; observed: {list(names)}")
    z: dict[str, tuple[float, float]] = {}
    for path in truth_paths:
        truth = json.loads(Path(path).read_text())
        params = truth.get("params", {})
        if truth["name"] in names and "z_lens" in params and "z_source" in params:
            z[truth["name"]] = (float(params["z_lens"]), float(params["z_source"]))
    z.update({name: (float(zl), float(zs)) for name, (zl, zs) in configured.items()})
    return {n: v[0] for n, v in z.items()}, {n: v[1] for n, v in z.items()}


def derive_observations(samples_npz: str | Path, out_json: str | Path, *, derived_cfg: Mapping[str, Any],
                        cosmology: str, truth_paths: Sequence[str | Path] = (), seed: int = 0) -> dict[str, Any]:
    """Image positions and time delays of every observed lens from its NPE posterior samples (the ``derive`` rule).

    Redshifts come from :func:`lens_redshifts`; the point source sits at the posterior's source centre
    (``source_center_x/y`` must then be flow targets) unless ``derived.source_position`` fixes it.
    """
    from .diagnostics import load_posterior_samples

    post = load_posterior_samples(samples_npz)
    z_l, z_s = lens_redshifts(post.names, configured=derived_cfg.get("redshifts"), truth_paths=truth_paths)
    pos = derived_cfg.get("source_position")
    if pos is None and not {"source_center_x", "source_center_y"} <= set(post.columns):
        raise ValueError("derived quantities need the point-source position: add source_center_x and "
                         "source_center_y to flow.targets or set derived.source_position")
    return write_derived(samples_npz, out_json, z_lens=z_l or None, z_source=z_s or None, cosmology=cosmology,
                         source_position=tuple(pos) if pos is not None else None,
                         max_samples=int(derived_cfg.get("max_samples", 1000)), seed=seed)
