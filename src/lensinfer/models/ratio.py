"""ResNet likelihood-ratio estimator with late fusion of θ (spec/science.md §3).

torchvision-style ResNet on a one-channel image (He et al. 2016): 7×7/2 stem, max-pool, four stages of
BasicBlocks (depth 18, 34) or Bottlenecks (depth 50), global average pooling. The reference
(``resnet.ResNetRatioEstimator`` of Zhang, Şengül & Dvorkin 2023) concatenates the scalar θ to the pooled features
and applies fc(F+1 → 512) → ReLU → fc(512 → 1): the output is the logit log r̂(x|θ). Because θ enters only
after pooling, :meth:`RatioEstimator.embed` runs once per image and :meth:`RatioEstimator.head` alone runs on a
θ grid — the basis of cheap inference. ``depth='small'`` is a narrow [1, 1, 1, 1] BasicBlock net for CPUs.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["BasicBlock", "Bottleneck", "ResNetEmbedding", "RatioEstimator", "build_ratio_estimator", "ratio_loss"]

Depth = Literal["small", "18", "34", "50"]

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


class ResNetEmbedding(nn.Module):
    """ResNet trunk: image (B, C, H, W) → pooled features (B, F)."""

    def __init__(self, depth: Depth = "18", width: int = 64, in_channels: int = 1, dropout: float = 0.0) -> None:
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
        in_planes = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            for j in range(n):
                layers.append(block(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1, dropout=dropout))
                in_planes = planes * block.expansion
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.features = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.layers(self.stem(x))), 1)


class RatioEstimator(nn.Module):
    """log r̂(x|θ) = head(embed(x), θ) with θ concatenated after pooling (late fusion)."""

    def __init__(self, depth: Depth = "18", width: int = 64, head_hidden: int = 512, n_params: int = 1,
                 dropout: float = 0.0, in_channels: int = 1) -> None:
        super().__init__()
        self.embedding = ResNetEmbedding(depth, width, in_channels, dropout)
        self.n_params = n_params
        self.fc = nn.Sequential(
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(self.embedding.features + n_params, head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(head_hidden, 1),
        )

    def embed(self, x: Tensor) -> Tensor:
        """Image features (B, F); add the channel axis for (B, H, W) input."""
        return self.embedding(x.unsqueeze(1) if x.dim() == 3 else x)

    def head(self, features: Tensor, theta: Tensor) -> Tensor:
        """Logits (…,) for features (…, F) and whitened θ (…,) or (…, P); leading dims broadcast."""
        if theta.dim() == features.dim() - 1:
            theta = theta.unsqueeze(-1)
        shape = torch.broadcast_shapes(features.shape[:-1], theta.shape[:-1])
        features = features.expand(*shape, features.shape[-1])
        theta = theta.expand(*shape, theta.shape[-1])
        return self.fc(torch.cat([features, theta.to(features.dtype)], dim=-1)).squeeze(-1)

    def forward(self, x: Tensor, theta: Tensor) -> Tensor:
        return self.head(self.embed(x), theta)


def build_ratio_estimator(model_cfg: dict, n_params: int = 1, in_channels: int = 1) -> RatioEstimator:
    """The estimator described by the ``model`` section of the config."""
    return RatioEstimator(depth=str(model_cfg["depth"]), width=int(model_cfg["width"]),
                          head_hidden=int(model_cfg["head_hidden"]), n_params=n_params,
                          dropout=float(model_cfg.get("dropout", 0.0)), in_channels=in_channels)


def ratio_loss(model: RatioEstimator, x: Tensor, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Binary cross-entropy of joint (x_i, θ_i) against marginal (x_i, θ_j), j ≠ i (NRE; Hermans et al. 2020).

    Each image is used twice, as in the reference: with its own θ (label 1) and with the θ of another, uniformly
    chosen element of the batch (label 0). The optimal logit is log p(x|θ)/p(x).
    """
    b = x.shape[0]
    if b < 2:
        raise ValueError("ratio_loss needs a batch of at least 2 images")
    shift = torch.randint(1, b, (b,), generator=generator, device="cpu").to(theta.device)
    other = (torch.arange(b, device=theta.device) + shift) % b
    feats = model.embed(x)
    logits = torch.cat([model.head(feats, theta), model.head(feats, theta[other])])
    labels = torch.cat([torch.ones(b, device=logits.device), torch.zeros(b, device=logits.device)])
    return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
