"""Neural posterior estimator: ResNet embedding → conditional normalising flow q(θ | x) (NPE).

Neural posterior estimation (Papamakarios & Murray 2016; Greenberg, Nonnenmacher & Macke 2019) fits a conditional
density q_φ(θ | x) to simulated pairs (θ, x) ~ π(θ)p(x|θ) by maximising E[log q_φ(θ|x)]; at the optimum
q = p(θ|x). As in the strong-lensing NPE of Ramos & De Bom (seeds 001/003: an embedding network feeding a neural
spline flow / masked autoregressive flow, 4 transforms), the image is embedded by the project's ResNet trunk
(:class:`lensinfer.models.ratio.ResNetEmbedding`, shared with the ratio estimator), projected to
``context_features`` and used as the context of a zuko flow over the *whitened* targets (B, P):

* ``type: nsf`` — neural spline flow (Durkan et al. 2019): monotonic rational-quadratic splines with ``bins`` bins
  on [−5, 5] (identity outside), conditioned by masked MLPs;
* ``type: maf`` — masked autoregressive flow (Papamakarios, Pavlakou & Murray 2017): affine transforms.

**Bounded targets** (``target_bounds``: a [low, high] box in whitened units, or None, per target; set by the training
stage from a uniform prior, ``flow.prior_support``): the flow then models z = Φ⁻¹((θ' − low)/(high − low)) instead of
θ', with the change of variables log q(θ') = log q_z(z) − log(high − low) − log φ(z). Its support is exactly the
prior box, and for a uniform prior q(θ')/π(θ') = q_z(z)/φ(z): the posterior-to-prior ratio of an uninformative
image is the flow's deviation from its own base density — no box edges to approximate. A flow over θ' itself has to
drop its density to 0 at the box edges, which a spline flow of finite capacity fits by piling mass just inside them:
spikes of log q at the prior bounds (``bench/npe_edges.py``; ``tests/test_npe_edges.py``). The price: near the
edges the curve is log q_z(z) − log φ(z) with |z| → ∞, so a posterior wider than the prior in z (an under-trained,
over-dispersed flow: z std 1.17 after one epoch of the test config) rises towards both edges instead.

``passes`` (default 2) is the number of sequential passes of the inverse: 2 makes every transform a coupling
layer (alternating halves), so sampling costs 2 MLP evaluations per transform instead of P (``passes: 0`` = fully
autoregressive, P passes). Densities (log_prob, training) cost one pass either way.

Sampling speed (posterior samples of thousands of lenses): the image is embedded once (:meth:`FlowPosterior.embed`)
and the flow then evaluates or samples any number of θ per image from the features. For coupling flows the sampler
(:class:`_CouplingInverse`) builds the splines of each layer's context-only half once per image, runs the
hyper-network only on the other half with the context's first-layer product precomputed, and — on CPU, for NSF —
inverts the splines with one fused numba kernel over the raw hyper-network output
(:func:`lensinfer.models.spline.rqs_inverse`) instead of zuko's ~40 tensor operations; the same numbers as zuko's
inverse to float32 rounding. zuko's own spline is used for training and densities: its softmax over K ≈ 8 values
is slow in PyTorch on CPU for such a short last axis, and since the pre-activations are bounded by |log slope|/2
(zuko's ``x / (1 + |2x/log slope|)``), :class:`FastRQSTransform` uses exp(x)/Σexp(x) without the max shift — the
same function, faster.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Mapping

import torch
import torch.nn.functional as F
import zuko
from torch import Tensor, nn
from zuko.flows.autoregressive import MaskedAutoregressiveTransform
from zuko.transforms import MonotonicRQSTransform, Transform
from zuko.utils import unpack

from . import spline
from .ratio import ResNetEmbedding, fused_copy

__all__ = ["FastRQSTransform", "FlowPosterior", "fast_asinh", "build_flow_posterior", "flow_loss",
           "EMBEDDING_DEFAULTS", "FLOW_DEFAULTS"]

#: embedding defaults: those of the ``model`` section of the config schema
EMBEDDING_DEFAULTS: dict[str, Any] = {"depth": "18", "width": 64, "dropout": 0.0, "stretch": None}
#: flow defaults (``flow`` section of the config schema)
FLOW_DEFAULTS: dict[str, Any] = {"type": "nsf", "transforms": 4, "hidden_features": [128, 128], "bins": 8,
                                 "passes": 2, "context_features": 64}


class FastRQSTransform(MonotonicRQSTransform):
    """zuko's monotonic rational-quadratic spline with softmax written as exp/Σexp (bounded inputs; same values)."""

    def __init__(self, widths: Tensor, heights: Tensor, derivatives: Tensor, bound: float = 5.0,
                 slope: float = 1e-3, **kwargs: Any) -> None:
        Transform.__init__(self, **kwargs)
        log_slope = math.log(slope)
        widths = torch.exp(widths / (1 + abs(2 * widths / log_slope)))  # |exponent| ≤ |log slope|/2
        heights = torch.exp(heights / (1 + abs(2 * heights / log_slope)))
        derivatives = derivatives / (1 + abs(derivatives / log_slope))
        widths = F.pad(widths / widths.sum(dim=-1, keepdim=True), (1, 0), value=0)
        heights = F.pad(heights / heights.sum(dim=-1, keepdim=True), (1, 0), value=0)
        self.horizontal = bound * (2 * torch.cumsum(widths, dim=-1) - 1)
        self.vertical = bound * (2 * torch.cumsum(heights, dim=-1) - 1)
        self.derivatives = torch.exp(F.pad(derivatives, (1, 1), value=0))


def _flow(kind: str, n_params: int, context: int, transforms: int, hidden: list[int], bins: int,
          passes: int) -> zuko.flows.Flow:
    kwargs: dict[str, Any] = {"hidden_features": tuple(int(h) for h in hidden)}
    if passes > 0:
        kwargs["passes"] = min(int(passes), n_params)
    if kind == "nsf":
        return zuko.flows.MAF(n_params, context, transforms=transforms, univariate=partial(FastRQSTransform, slope=1e-3),
                              shapes=[(bins,), (bins,), (bins - 1,)], **kwargs)
    if kind == "maf":
        return zuko.flows.MAF(n_params, context, transforms=transforms, **kwargs)
    raise ValueError(f"flow.type: unknown {kind!r}; allowed: nsf, maf")


def _rows(features: Tensor, total: int) -> Tensor:
    """Output rows of a zuko hyper-network that hold the parameters of ``features`` (``total`` per feature)."""
    return (features[:, None] * total + torch.arange(total, device=features.device)).reshape(-1)


def _fused_spline(t: MaskedAutoregressiveTransform, device: torch.device) -> dict[str, float] | None:
    """Arguments of :func:`lensinfer.models.spline.rqs_inverse` when transform ``t`` is one of our NSF transforms
    and the fused CPU kernel can run; None otherwise (zuko's tensor code is used)."""
    u = t.univariate
    if device.type != "cpu" or not spline.available() or not (isinstance(u, partial) and u.func is FastRQSTransform):
        return None
    return {"bins": int(t.shapes[0][0]), "bound": float(u.keywords.get("bound", 5.0)),
            "slope": float(u.keywords.get("slope", 1e-3))}


class _CouplingInverse:
    """Inverse of one zuko coupling transform (``passes`` ≤ 2) for y (S, B, P) and contexts c (B, C), the same
    numbers as ``t(c).inv(y)`` without its redundancy (see :meth:`FlowPosterior.sample_features`). The masked weights
    are multiplied out once per sampling call, not once per chunk."""

    def __init__(self, t: MaskedAutoregressiveTransform, p: int, device: torch.device) -> None:
        layers = list(t.hyper)
        first, last = layers[0], layers[-1]
        w1 = first.mask * first.weight  # (H, P + C)
        self.t = t
        self.w_ctx, self.b_in = w1[:, p:], first.bias  # the context's share of the first layer
        self.order0 = torch.nonzero(t.order == 0).squeeze(-1)
        self.order1 = torch.nonzero(t.order == 1).squeeze(-1)
        self.w_in = torch.zeros_like(w1[:, :p])  # the θ share, restricted to the order-0 features (pass 2's input)
        self.w_in[:, self.order0] = w1[:, self.order0]
        # hidden layers: ("linear", weight, bias) or ("act", module)
        self.hidden = [("linear", layer.mask * layer.weight, layer.bias) if hasattr(layer, "weight") else ("act", layer)
                       for layer in layers[1:-1]]
        w_last = last.mask * last.weight
        # output layer restricted to each pass's features: (features, weight rows, bias rows)
        self.pass0, self.pass1 = ((f, w_last[_rows(f, t.total)], last.bias[_rows(f, t.total)])
                                  for f in (self.order0, self.order1))
        self.fused = _fused_spline(t, device)

    def _mlp(self, h: Tensor, inplace: bool) -> Tensor:
        for op in self.hidden:
            if op[0] == "linear":
                h, inplace = F.linear(h, op[1], op[2]), True
            elif inplace and isinstance(op[1], nn.ReLU):
                h = h.relu_()  # in place on a fresh tensor: one memory pass less
            else:
                h = op[1](h)
        return h

    def _invert(self, out_layer: tuple[Tensor, Tensor, Tensor], h: Tensor, y: Tensor, x: Tensor) -> None:
        feats, w, b = out_layer
        phi = F.linear(h, w, b).unflatten(-1, (len(feats), self.t.total))
        if self.fused is not None:  # one pass over the raw parameters (lensinfer.models.spline), same values
            spline.rqs_inverse(y, phi if phi.dim() == 4 else phi[None], columns=feats, out=x, **self.fused)
        else:
            x[..., feats] = self.t.univariate(*unpack(phi, self.t.shapes)).inv(y[..., feats])

    def __call__(self, c: Tensor, y: Tensor) -> Tensor:
        base = F.linear(c, self.w_ctx, self.b_in)  # (B, H): once per image
        x = y.clone()
        # pass 1: the order-0 features depend on the context alone, so their spline is built once per image
        self._invert(self.pass0, self._mlp(base, inplace=False), y, x)
        if len(self.order1):  # pass 2: the order-1 features depend on the context and the order-0 features
            h = F.linear(x, self.w_in).add_(base)  # w_in is zero on the order-1 columns (still y there: finite)
            self._invert(self.pass1, self._mlp(h, inplace=True), y, x)
        return x


def fast_asinh(u: Tensor) -> Tensor:
    """asinh(u) = sign(u)·log1p(|u| + u²/(1 + √(u² + 1))) from vectorised elementwise ops: PyTorch's CPU ``asinh`` is
    a scalar loop (~3× slower on a batch of images). Within 2e-7 relative of float64 asinh for |u| ≤ 1e18 (|u| is
    clamped there: u² must not overflow float32); gradients via autograd."""
    a = u.abs().clamp_max(1e18)
    a2 = a * a
    return torch.copysign(torch.log1p(a + a2 / (1 + torch.sqrt(a2 + 1))), u)


class FlowPosterior(nn.Module):
    """q(θ' | x): ResNet features → Linear → context of a conditional zuko NSF/MAF over whitened targets θ' (B, P).

    Images are (B, H, W) or (B, C, H, W); θ' is (…, B, P) whitened (see :class:`lensinfer.data.loader.Whitening`;
    de-whitening is the caller's, e.g. ``whitening.unparams``).
    """

    def __init__(self, n_params: int, in_channels: int = 1, *, depth: str = "18", width: int = 64,
                 dropout: float = 0.0, flow_type: str = "nsf", transforms: int = 4,
                 hidden_features: list[int] | tuple[int, ...] = (128, 128), bins: int = 8, passes: int = 2,
                 context_features: int = 64, stretch: float | None = None,
                 zero_level: float | tuple[float, ...] = 0.0,
                 target_bounds: list[list[float] | None] | None = None) -> None:
        super().__init__()
        self.n_params = int(n_params)
        bounds = list(target_bounds) if target_bounds is not None else [None] * self.n_params
        if len(bounds) != self.n_params:
            raise ValueError(f"target_bounds has {len(bounds)} entries for {self.n_params} targets")
        for b in bounds:
            if b is not None and not float(b[0]) < float(b[1]):
                raise ValueError(f"target_bounds: low < high required, got {b}")
        self.target_bounds = [None if b is None else [float(b[0]), float(b[1])] for b in bounds]
        self.register_buffer("box_mask", torch.tensor([b is not None for b in bounds], dtype=torch.bool),
                             persistent=False)
        self.register_buffer("box_low", torch.tensor([0.0 if b is None else float(b[0]) for b in bounds]),
                             persistent=False)
        self.register_buffer("box_width", torch.tensor([1.0 if b is None else float(b[1]) - float(b[0])
                                                        for b in bounds]), persistent=False)
        self.stretch = None if stretch is None else float(stretch)
        # whitened value of zero flux per channel (−μ/σ): the arcsinh stretch is centred there (a state buffer, so a
        # loaded model keeps its training set's value)
        level = torch.as_tensor(zero_level, dtype=torch.float32).reshape(-1)
        self.register_buffer("zero_level", level.expand(in_channels).clone() if len(level) == 1 else level)
        self.embedding = ResNetEmbedding(depth, width, in_channels, dropout)
        self.project = nn.Sequential(nn.Linear(self.embedding.features, context_features), nn.ReLU(inplace=True),
                                     nn.Linear(context_features, context_features))
        self.flow = _flow(flow_type, self.n_params, context_features, int(transforms), list(hidden_features),
                          int(bins), int(passes))

    @staticmethod
    def _image(x: Tensor) -> Tensor:
        return x.unsqueeze(1) if x.dim() == 3 else x

    def embed(self, x: Tensor) -> Tensor:
        """Flow context (B, context_features) of images (B, [C,] H, W): run once per image. With ``stretch`` a
        (whitened images are first mapped to asinh((x − x₀)/a), x₀ the zero-flux level: linear near the sky noise,
        logarithmic on the bright lens light — the faint arcs keep their contrast; Lupton et al. 1999)."""
        x = self._image(x)
        if self.stretch is not None:
            x = fast_asinh((x - self.zero_level.to(x.dtype)[:, None, None]) / self.stretch)
        return self.project(self.embedding(x.contiguous(memory_format=torch.channels_last))).float()

    def fused(self) -> "FlowPosterior":
        """An inference copy: the trunk's BatchNorms folded into its convolutions (exact in eval mode, up to
        rounding), channels_last weights, no gradients (:func:`lensinfer.models.ratio.fused_copy`). Not trainable."""
        return fused_copy(self)

    @property
    def bounded(self) -> bool:
        """True when some target is modelled on its prior box (module docstring, *bounded targets*)."""
        return bool(self.box_mask.any())

    def to_base_space(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z, log |∂z/∂θ'| summed over targets, inside-the-box flag) of whitened θ' (…, P)."""
        u = (theta - self.box_low) / self.box_width
        inside = ((u >= 0) & (u <= 1)) | ~self.box_mask
        eps = 1e-7
        z = math.sqrt(2.0) * torch.erfinv(2.0 * u.clamp(eps, 1 - eps) - 1.0)
        z = torch.where(self.box_mask, z, theta)
        log_phi = -0.5 * z * z - 0.5 * math.log(2 * math.pi)
        log_det = torch.where(self.box_mask, -torch.log(self.box_width) - log_phi, torch.zeros_like(z)).sum(-1)
        return z, log_det, inside.all(-1)

    def from_base_space(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`to_base_space`: whitened θ' (…, P) from flow-space values z."""
        theta = self.box_low + self.box_width * 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
        return torch.where(self.box_mask, theta, z)

    def log_prob_features(self, theta: Tensor, features: Tensor) -> Tensor:
        """log q(θ'|x) (…, B) of whitened θ' (…, B, P) (or (…, B) when P = 1) given the context (B, F); −inf
        outside the box of bounded targets."""
        if self.n_params == 1 and (theta.dim() == 1 or theta.shape[-1] != 1):
            theta = theta.unsqueeze(-1)
        with torch.autocast(features.device.type, enabled=False):  # the flow always runs in float32
            if not self.bounded:
                return self.flow(features.float()).log_prob(theta.float())
            z, log_det, inside = self.to_base_space(theta.float())
            logq = self.flow(features.float()).log_prob(z) + log_det
            return torch.where(inside, logq, torch.full_like(logq, -math.inf))

    def log_prob(self, theta: Tensor, x: Tensor) -> Tensor:
        """log q(θ'|x) (B,) of whitened θ' (B, P) paired with images (B, [C,] H, W)."""
        return self.log_prob_features(theta, self.embed(x))

    def forward(self, x: Tensor, theta: Tensor) -> Tensor:
        return self.log_prob(theta, x)

    @torch.no_grad()
    def sample_features(self, features: Tensor, n: int, chunk: int = 1 << 14,
                        generator: torch.Generator | None = None) -> Tensor:
        """n whitened samples per context: (B, n, P). Works on ``chunk`` (sample × image) rows at a time (small
        chunks stay in cache: 16 k rows ran ~2× faster than 256 k here).

        Fast path for coupling transforms (``passes`` = 2, P ≥ 2): zuko inverts a transform with 2 passes, each
        evaluating the hyper-network and building the splines of *all* P features on every sample. Here pass 1
        builds the splines of the order-0 features once per image (they depend on the context only), pass 2 runs
        the network on the samples with the context's first-layer product precomputed per image and builds only
        the order-1 features' splines, NSF splines inverted by the fused kernel on CPU — the same numbers
        (``sample_features_reference``) at a fraction of the cost.

        With ``generator`` the base draws come from it (reproducible); the flow is then inverted on them.
        """
        b = features.shape[0]
        out = torch.empty(b, n, self.n_params, device=features.device)
        per = max(1, chunk // max(n, 1))  # images per chunk, all n samples each
        transforms = list(self.flow.transform.transforms)
        fast = all(isinstance(t, MaskedAutoregressiveTransform) and t.order is not None and int(t.order.max()) <= 1
                   for t in transforms)
        inverses = [_CouplingInverse(t, self.n_params, features.device) for t in reversed(transforms)] if fast else []
        for i in range(0, b, per):
            c = features[i:i + per].float()
            with torch.autocast(features.device.type, enabled=False):
                # one draw per image: the samples of an image do not depend on the chunking
                z = torch.stack([torch.randn((n, self.n_params), generator=generator) for _ in range(len(c))], dim=1)
                z = z.to(c.device)
                if fast:
                    for inverse in inverses:
                        z = inverse(c, z)
                else:
                    z = self.flow(c).transform.inv(z)
                if self.bounded:
                    z = self.from_base_space(z)
                out[i:i + per] = z.transpose(0, 1)
        return out

    @torch.no_grad()
    def sample_features_reference(self, features: Tensor, z: Tensor) -> Tensor:
        """zuko's own inverse of base draws z (S, B, P) for contexts (B, F) — the reference of the fast path."""
        y = self.flow(features.float()).transform.inv(z)
        return self.from_base_space(y) if self.bounded else y

    def sample(self, x: Tensor, n: int, chunk: int = 1 << 14, generator: torch.Generator | None = None) -> Tensor:
        """n whitened posterior samples per image (B, n, P); de-whiten with ``Whitening.unparams``."""
        return self.sample_features(self.embed(x), n, chunk, generator)


def build_flow_posterior(cfg: Mapping[str, Any], n_params: int, in_channels: int = 1,
                         zero_level: float | tuple[float, ...] = 0.0) -> FlowPosterior:
    """The posterior estimator described by the ``flow`` section of the config (defaults: :data:`FLOW_DEFAULTS`,
    embedding :data:`EMBEDDING_DEFAULTS`). ``zero_level``: the whitened value of zero flux (−μ/σ per channel, see
    :attr:`lensinfer.data.loader.Whitening.zero_level`), used by ``embedding.stretch``. ``cfg["target_bounds"]``
    (whitened [low, high] or None per target, written by the training stage): bounded targets (module docstring)."""
    c = dict(FLOW_DEFAULTS, **{k: v for k, v in cfg.items() if k in FLOW_DEFAULTS})
    emb = dict(EMBEDDING_DEFAULTS, **dict(cfg.get("embedding") or {}))
    return FlowPosterior(n_params, in_channels, depth=str(emb["depth"]), width=int(emb["width"]),
                         dropout=float(emb["dropout"]), flow_type=str(c["type"]), transforms=int(c["transforms"]),
                         hidden_features=list(c["hidden_features"]), bins=int(c["bins"]), passes=int(c["passes"]),
                         context_features=int(c["context_features"]), stretch=emb["stretch"], zero_level=zero_level,
                         target_bounds=cfg.get("target_bounds"))


def flow_loss(model: FlowPosterior, x: Tensor, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """NPE loss: −mean log q(θ'_i | x_i) over the batch (Papamakarios & Murray 2016). ``generator`` is unused
    (same signature as :func:`lensinfer.models.ratio.ratio_loss`)."""
    return -model.log_prob(theta, x).mean()
