"""ResNet likelihood-ratio estimators: late fusion of θ (spec/science.md §3) or FiLM conditioning.

torchvision-style ResNet on a one-channel image (He et al. 2016): 7×7/2 stem, max-pool, four stages of
BasicBlocks (depth 18, 34) or Bottlenecks (depth 50), global average pooling. ``depth='small'`` is a narrow
[1, 1, 1, 1] BasicBlock net for CPUs. The output is the logit d(x, θ) ≈ log r(x|θ) = log p(x|θ)/p(x) of the
classifier between joint pairs (x, θ) ~ p(x, θ) and marginal pairs ~ p(x)p(θ) (NRE: Hermans, Begy & Louppe 2020,
ICML; the Bayes-optimal classifier is s* = r/(1 + r)).

**Late fusion** (``conditioning='late'``, the reference ``resnet.ResNetRatioEstimator`` of Zhang, Şengül &
Dvorkin 2023): the scalar θ is concatenated to the pooled features and fc(F+1 → H) → ReLU → fc(H → 1) gives the
logit. Because θ enters only after pooling, :meth:`RatioEstimator.embed` runs once per image and only the head
runs on a θ grid; :meth:`RatioEstimator.log_ratio_grid` further splits fc1 as W·[f; θ] = W_f·f + w_θ·θ, so a grid
point costs O(H) instead of O(F·H).

**FiLM** (``conditioning='film'``, Perez et al. 2018, AAAI): a small MLP maps θ to a per-channel scale
and shift (γ_c, β_c) applied after every ResNet stage, FiLM(h_c) = (1 + γ_c(θ))·h_c + β_c(θ), so θ modulates the
image features themselves; θ is also concatenated before the head as in late fusion. The last MLP layer starts at
zero, so an untrained FiLM net equals its late-fusion counterpart. **Trade-off:** the trunk depends on θ, so
embed-once inference is impossible — a γ curve costs G full forward passes instead of one (×150 on the reference
grid), and a training step runs the trunk on both the joint and the marginal pairs (×2).
"""

from __future__ import annotations

import copy
from typing import Literal, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "FiLM",
    "ResNetEmbedding",
    "RatioEstimator",
    "build_ratio_estimator",
    "fuse_batchnorm_",
    "fused_copy",
    "ratio_loss",
]

Depth = Literal["small", "18", "34", "50"]
_M = TypeVar("_M", bound=nn.Module)
Conditioning = Literal["late", "film"]

_CONFIGS: dict[str, tuple[str, list[int]]] = {
    "small": ("basic", [1, 1, 1, 1]),
    "18": ("basic", [2, 2, 2, 2]),
    "34": ("basic", [3, 4, 6, 3]),
    "50": ("bottleneck", [3, 4, 6, 3]),
}


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (expansion 1)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(self.drop(x))))
        out = self.bn2(self.conv2(self.drop(out)))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 bottleneck with a residual connection (expansion 4)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(self.drop(x))))
        out = torch.relu(self.bn2(self.conv2(self.drop(out))))
        out = self.bn3(self.conv3(self.drop(out)))
        return torch.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class FiLM(nn.Module):
    """Feature-wise linear modulation (Perez et al. 2018): θ (B, P) → per-channel (1 + γ(θ), β(θ)) of each stage."""

    def __init__(self, n_params: int, channels: list[int], hidden: int = 64) -> None:
        super().__init__()
        self.channels = channels
        self.net = nn.Sequential(nn.Linear(n_params, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * sum(channels)))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, theta: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(scale, shift), each (B, C, 1, 1), for every stage."""
        out = self.net(theta)
        scales, shifts = out.split([sum(self.channels)] * 2, dim=-1)
        return [(1.0 + g[..., None, None], b[..., None, None])
                for g, b in zip(scales.split(self.channels, -1), shifts.split(self.channels, -1))]


class ResNetEmbedding(nn.Module):
    """ResNet trunk: image (B, C, H, W) → pooled features (B, F), optionally FiLM-conditioned on θ after each stage."""

    def __init__(self, depth: Depth = "18", width: int = 64, in_channels: int = 1, dropout: float = 0.0,
                 film_params: int = 0, film_hidden: int = 64) -> None:
        super().__init__()
        if str(depth) not in _CONFIGS:
            raise ValueError(f"model.depth: unknown {depth!r}; allowed: {sorted(_CONFIGS)}")
        kind, blocks = _CONFIGS[str(depth)]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.stem = nn.Sequential(
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers: list[nn.Module] = []
        stage_channels: list[int] = []
        self.stage_ends: list[int] = []
        in_planes = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            for j in range(n):
                layers.append(block(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1, dropout=dropout))
                in_planes = planes * block.expansion
            self.stage_ends.append(len(layers) - 1)
            stage_channels.append(in_planes)
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.features = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.film = FiLM(film_params, stage_channels, film_hidden) if film_params > 0 else None

    def forward(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """Pooled features; ``theta`` (B, P) is required with FiLM and ignored without."""
        h = self.stem(x)
        if self.film is None:
            h = self.layers(h)
        else:
            if theta is None:
                raise ValueError("a FiLM-conditioned embedding needs θ")
            mods = iter(self.film(theta))
            for k, layer in enumerate(self.layers):
                h = layer(h)
                if k in self.stage_ends:
                    scale, shift = next(mods)
                    h = h * scale + shift
        return torch.flatten(self.pool(h), 1)


def fuse_batchnorm_(emb: ResNetEmbedding) -> ResNetEmbedding:
    """Fold every BatchNorm of an eval-mode trunk into the convolution before it, in place (exact up to rounding:
    y = γ(Wx − μ)/√(σ² + ε) + β is again a convolution)."""
    emb.stem[1], emb.stem[2] = fuse_conv_bn_eval(emb.stem[1], emb.stem[2]), nn.Identity()
    for blk in emb.layers:
        for conv, bn in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
            if hasattr(blk, bn):
                setattr(blk, conv, fuse_conv_bn_eval(getattr(blk, conv), getattr(blk, bn)))
                setattr(blk, bn, nn.Identity())
        if isinstance(blk.shortcut, nn.Sequential):
            blk.shortcut = fuse_conv_bn_eval(blk.shortcut[0], blk.shortcut[1])
    return emb


def fused_copy(model: _M) -> _M:
    """An inference copy of a model with a ResNet trunk at ``model.embedding``: eval mode, BatchNorm folded into the
    convolutions (:func:`fuse_batchnorm_`), channels_last weights, no gradients."""
    model = copy.deepcopy(model).eval()
    fuse_batchnorm_(model.embedding)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(memory_format=torch.channels_last)


class RatioEstimator(nn.Module):
    """d(x, θ) ≈ log r(x|θ): ResNet features and θ through fc(F+P → H) → ReLU → fc(H → 1); late fusion or FiLM."""

    def __init__(self, depth: Depth = "18", width: int = 64, head_hidden: int = 512, n_params: int = 1,
                 dropout: float = 0.0, in_channels: int = 1, conditioning: Conditioning = "late") -> None:
        super().__init__()
        if conditioning not in ("late", "film"):
            raise ValueError(f"model.conditioning: unknown {conditioning!r}; allowed: late, film")
        self.conditioning = conditioning
        self.embedding = ResNetEmbedding(depth, width, in_channels, dropout,
                                         film_params=n_params if conditioning == "film" else 0)
        self.n_params = n_params
        self.fc = nn.Sequential(
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(self.embedding.features + n_params, head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(head_hidden, 1),
        )

    @property
    def embed_once(self) -> bool:
        """True when the image features do not depend on θ (late fusion)."""
        return self.conditioning == "late"

    @staticmethod
    def _image(x: Tensor) -> Tensor:
        return x.unsqueeze(1) if x.dim() == 3 else x

    def _theta(self, theta: Tensor, batch: int) -> Tensor:
        theta = theta.reshape(-1, self.n_params) if theta.dim() <= 1 else theta
        return theta.expand(batch, self.n_params) if theta.shape[0] == 1 else theta

    def embed(self, x: Tensor) -> Tensor:
        """Image features (B, F) of a late-fusion model; add the channel axis for (B, H, W) input."""
        if not self.embed_once:
            raise RuntimeError("a FiLM-conditioned estimator has no θ-independent embedding; use forward(x, θ)")
        return self.embedding(self._image(x))

    def head(self, features: Tensor, theta: Tensor) -> Tensor:
        """Logits (…,) for features (…, F) and whitened θ (…,) or (…, P); leading dims broadcast."""
        if theta.dim() == features.dim() - 1:
            theta = theta.unsqueeze(-1)
        shape = torch.broadcast_shapes(features.shape[:-1], theta.shape[:-1])
        features = features.expand(*shape, features.shape[-1])
        theta = theta.expand(*shape, theta.shape[-1])
        return self.fc(torch.cat([features, theta.to(features.dtype)], dim=-1)).squeeze(-1)

    def forward(self, x: Tensor, theta: Tensor) -> Tensor:
        """Logits (B,) of images (B, [C,] H, W) paired with θ (B,) or (B, P)."""
        x = self._image(x)
        if self.embed_once:
            return self.head(self.embedding(x), theta)
        theta = self._theta(theta, x.shape[0]).to(x.dtype)
        return self.head(self.embedding(x, theta), theta)

    def fused(self) -> "RatioEstimator":
        """An inference copy: every BatchNorm folded into its convolution (exact in eval mode, up to rounding) and
        channels_last weights — about half the CPU time of the eager trunk (``bench/infer.py``). Not trainable."""
        return fused_copy(self)

    def log_ratio_grid(self, x: Tensor, grid: Tensor, chunk: int = 4096) -> Tensor:
        """Logits (B, G) of every image with every grid value (whitened θ, (G,)); eval mode, no dropout.

        Late fusion: one trunk pass per image, then fc1 split as W_f·f + w_θ·θ_g + b (exact up to rounding).
        FiLM: B·G trunk passes in chunks of ``chunk`` image–θ pairs.
        """
        x = self._image(x).contiguous(memory_format=torch.channels_last)  # no-op for one channel; matches fused()
        if self.embed_once:
            feats = self.embedding(x)
            fc1, fc2 = self.fc[1], self.fc[4]
            n_feat = feats.shape[-1]
            proj = feats @ fc1.weight[:, :n_feat].T + fc1.bias  # (B, H)
            slope = fc1.weight[:, n_feat:]  # (H, P)
            theta = grid.reshape(-1, self.n_params).to(proj.dtype)  # (G, P)
            hidden = torch.relu(proj[:, None, :] + (theta @ slope.T)[None, :, :])  # (B, G, H)
            return hidden @ fc2.weight[0] + fc2.bias[0]
        n_grid = grid.shape[0]
        pairs_x = x.repeat_interleave(n_grid, dim=0)
        pairs_t = grid.reshape(n_grid, -1).repeat(x.shape[0], 1)
        out = [self.forward(pairs_x[i:i + chunk], pairs_t[i:i + chunk]) for i in range(0, len(pairs_x), chunk)]
        return torch.cat(out).reshape(x.shape[0], n_grid)


def build_ratio_estimator(model_cfg: dict, n_params: int = 1, in_channels: int = 1) -> RatioEstimator:
    """The estimator described by the ``model`` section of the config."""
    return RatioEstimator(depth=str(model_cfg["depth"]), width=int(model_cfg["width"]),
                          head_hidden=int(model_cfg["head_hidden"]), n_params=n_params,
                          dropout=float(model_cfg.get("dropout", 0.0)), in_channels=in_channels,
                          conditioning=model_cfg.get("conditioning", "late"))


def ratio_loss(model: RatioEstimator, x: Tensor, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Binary cross-entropy of joint (x_i, θ_i) against marginal (x_i, θ_j), j ≠ i (NRE; Hermans et al. 2020).

    Each image is used twice, as in the reference: with its own θ (label 1) and with the θ of another, uniformly
    chosen element of the batch (label 0). The loss is the NRE classification loss of Hermans et al. (2020) with its
    expectations estimated on the batch; the optimal logit is log p(x|θ)/p(x).
    """
    b = x.shape[0]
    if b < 2:
        raise ValueError("ratio_loss needs a batch of at least 2 images")
    shift = torch.randint(1, b, (b,), generator=generator, device="cpu").to(theta.device)
    other = (torch.arange(b, device=theta.device) + shift) % b
    if model.embed_once:
        feats = model.embed(x)
        logits = torch.cat([model.head(feats, theta), model.head(feats, theta[other])])
    else:  # FiLM: the trunk sees each image twice, once per θ
        logits = model(torch.cat([x, x]), torch.cat([theta, theta[other]]))
    labels = torch.cat([torch.ones(b, device=logits.device), torch.zeros(b, device=logits.device)])
    return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
