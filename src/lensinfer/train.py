"""Training loop of the estimators: AdamW, ReduceLROnPlateau (or warm-up + cosine decay), early stopping,
checkpoint/resume.

One loop (:func:`_fit`) trains both estimators; only the model and the loss differ. The ratio estimator
(:func:`train_ratio_estimator`) minimises the NRE classification loss (Hermans, Begy & Louppe 2020;
:func:`lensinfer.models.ratio.ratio_loss`); the posterior estimator (:func:`train_flow_posterior`) the NPE loss
−log q(θ|x) (:func:`lensinfer.models.flow.flow_loss`).
Follows the reference optimisation (spec/science.md §3: AdamW lr 1e-3, weight decay 1e-5, ReduceLROnPlateau
factor 0.1 / patience 3 / threshold 0.01 abs / cooldown 2, early stopping after 3 epochs without a 0.001
improvement) with two fixes: validation once per epoch (the reference evaluated the whole validation set after
every batch) on a *fixed* pairing, and seeds everywhere. Note that an absolute plateau threshold of 0.01 is coarse
when the loss sits near ln 2 ≈ 0.693 (small data): every epoch then counts as a plateau and the learning rate
decays before the network has learned anything — configs for small data should lower ``train.scheduler.threshold``.
``train.scheduler.type: cosine`` replaces the plateau rule by a fixed budget: linear warm-up, then a per-step cosine
decay to ``min_factor`` × lr at ``max_epochs`` (Loshchilov & Hutter 2017, SGDR without restarts) — on a budget of
tens of epochs the plateau rule spends half of them at a learning rate too high to settle (issue 7's NPE bench).

Images and convolution weights are channels_last (NHWC) on every device: on CPU oneDNN's NHWC convolutions and
max-pooling take about 2/3 of the NCHW time of a ResNet training step (``bench/train_step.py``). On CUDA: bf16
autocast (same exponent range as float32, so no GradScaler is needed), cuDNN autotuning. On CPU: deterministic
kernels (``torch.use_deterministic_algorithms``), so a run is reproducible bit for bit; the NaN-filling of fresh
tensors that comes with that mode (``torch.utils.deterministic.fill_uninitialized_memory``, a debugging aid: no
kernel used here reads memory it has not written) is switched off — it cost ~10 % of a step. A checkpoint (model,
optimiser, scheduler, RNG states, history) is written atomically every epoch; a killed run resumes from it when the
training settings and data agree (its fingerprint).

Model selection (``train.select``): ``best`` writes the epoch of lowest validation loss; ``epoch`` writes the model
after ``train.select_epoch`` epochs (counted from 1, as the reference's ``epoch{N}_checkpt.pth``: the published model
is the epoch-20 checkpoint, spec/science.md §3). With ``epoch`` training runs exactly that many epochs — early
stopping does not cut it short, as the published run reached epoch 20 — and stops there.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.utils.deterministic
from torch import nn

from . import checkpoint
from .data.loader import (ChunkShuffleLoader, DihedralAugmentation, MergedDataset, Whitening, load_whitening,
                          noise_model_of)
from .device import select_device
from .models.flow import FLOW_DEFAULTS, build_flow_posterior, flow_loss
from .models.ratio import build_ratio_estimator, ratio_loss
from .progress import format_duration, time_left
from .seeds import config_hash, torch_seed

__all__ = ["resolve_device", "build_optimizer", "train_ratio_estimator", "train_flow_posterior", "flow_targets", "load_model",
           "load_estimator", "evaluate_loss", "read_history", "TrainingError"]

log = logging.getLogger(__name__)

HISTORY_FIELDS = ["epoch", "train_loss", "val_loss", "lr", "seconds"]


class TrainingError(RuntimeError):
    """A training run that cannot give a usable model (non-finite loss); no model file is written."""


def _finite_loss(value: float, kind: str, what: str, epoch: int) -> float:
    """``value`` if finite, else :class:`TrainingError` naming the estimator, the loss and the epoch."""
    if not math.isfinite(value):
        raise TrainingError(
            f"{kind} training: non-finite {what} ({value}) at epoch {epoch}; stopping without writing a model. "
            "Check the training data and its stats.json (non-finite or constant images: image_std), "
            "and train.lr / train.batch_size")
    return value


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA if available, else CPU (but an error when the scheduler granted a GPU torch cannot see);
    otherwise the named device (:func:`lensinfer.device.select_device`)."""
    return select_device(name)


def loader_workers(train_cfg: Mapping[str, Any], threads: int) -> int:
    """DataLoader worker processes: ``train.num_workers``, capped so that the main process plus the workers use no
    more CPUs than the job's ``threads`` (the rule asks for 1 + num_workers; Snakemake may grant fewer)."""
    wanted = int(train_cfg.get("num_workers", 0))
    workers = min(wanted, max(0, int(threads) - 1))
    if workers < wanted:
        log.warning("train.num_workers=%d loader workers do not fit the job's %d threads: using %d", wanted, threads,
                    workers)
    return workers


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, "torch.Generator | None"], torch.Tensor]


@torch.no_grad()
def evaluate_loss(model: nn.Module, loader: ChunkShuffleLoader, device: torch.device, seed: int,
                  loss_fn: LossFn = ratio_loss) -> float:
    """Mean validation loss; the NRE pairing is drawn from a fixed seed, so that epochs are comparable."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total, n = 0.0, 0
    for x, theta in loader:
        with _autocast(device):
            loss = loss_fn(model, _to(x, device), theta.to(device), gen)
        total += float(loss) * x.shape[0]
        n += x.shape[0]
    return total / max(n, 1)


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    x = x.unsqueeze(1) if x.dim() == 3 else x  # (B, H, W) → (B, 1, H, W); multi-band (B, C, H, W) as is
    return x.contiguous(memory_format=torch.channels_last)


def build_optimizer(model: nn.Module, train_cfg: Mapping[str, Any], device: torch.device) -> torch.optim.AdamW:
    """AdamW with ``train.lr`` and ``train.weight_decay``, fused (one kernel over all parameters: a quarter of the
    per-tensor loop's time on CPU) on CPU and CUDA."""
    return torch.optim.AdamW(model.parameters(), lr=float(train_cfg["lr"]), weight_decay=float(train_cfg["weight_decay"]),
                             fused=device.type in ("cpu", "cuda"))


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def cosine_factor(step: int, *, steps_per_epoch: int, epochs: int, warmup_epochs: float = 1.0,
                  min_factor: float = 0.01) -> float:
    """Learning-rate factor after ``step`` optimiser steps: linear warm-up from 1/warm-up-steps to 1 over
    ``warmup_epochs``, then cosine decay from 1 to ``min_factor`` at ``epochs`` (constant after)."""
    warm = max(0, round(warmup_epochs * steps_per_epoch))
    total = max(1, epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    frac = min(1.0, (step - warm) / max(1, total - warm))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * frac))


def _fit(
    *,
    kind: str,
    build: Callable[[int], nn.Module],
    loss_fn: LossFn,
    train_dir: str | Path,
    train_masks: str | Path,
    val_dir: str | Path,
    val_masks: str | Path,
    whitening: Whitening,
    fingerprint_cfg: dict[str, Any],
    blob: dict[str, Any],
    train_cfg: Mapping[str, Any],
    seed: int,
    out_model: str | Path,
    out_history: str | Path,
    checkpoint_dir: str | Path,
    threads: int,
    augment: Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """The one training loop of every estimator (NRE, NPE): only the model builder and the loss differ.

    ``build(in_channels)`` makes the model; ``loss_fn(model, x, θ, generator)`` is its batch loss. Device choice,
    bf16 autocast on CUDA, deterministic CPU kernels, AdamW + ReduceLROnPlateau, early stopping, the per-epoch
    atomic checkpoint (resumed when its fingerprint matches) and ``history.csv`` are shared. The best model is
    written with ``blob`` (what the loader needs to rebuild it) plus ``kind``, ``in_channels`` and the whitening.
    ``augment(x, θ, generator)`` (optional) transforms every training batch (not the validation batches).
    """
    torch.set_num_threads(max(1, threads))
    device = resolve_device(str(train_cfg.get("device", "auto")))
    base_seed = torch_seed(seed, "train")
    torch.manual_seed(base_seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    else:
        torch.backends.cudnn.benchmark = True
    train_data = MergedDataset(train_dir, train_masks)
    val_data = MergedDataset(val_dir, val_masks)
    in_channels = train_data.n_channels
    model = build(in_channels).to(device).to(memory_format=torch.channels_last)
    opt = build_optimizer(model, train_cfg, device)
    bs = int(train_cfg["batch_size"])
    if len(train_data) < bs:
        raise ValueError(f"train.batch_size={bs} exceeds the {len(train_data)} training images")
    sch_cfg = dict(train_cfg["scheduler"])
    per_step = sch_cfg.get("type", "plateau") == "cosine"
    if per_step:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            opt, partial(cosine_factor, steps_per_epoch=len(train_data) // bs, epochs=int(train_cfg["max_epochs"]),
                         warmup_epochs=float(sch_cfg.get("warmup_epochs", 1)),
                         min_factor=float(sch_cfg.get("min_factor", 0.01))))
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=float(sch_cfg["factor"]), patience=int(sch_cfg["patience"]),
            threshold=float(sch_cfg["threshold"]), threshold_mode="abs", cooldown=int(sch_cfg["cooldown"]))
    workers = loader_workers(train_cfg, threads)
    loader_threads = 2 if workers == 0 else 1  # decode threads per loading process
    train_loader = ChunkShuffleLoader(train_data, whitening, bs, seed=base_seed, threads=loader_threads,
                                      buffer_blocks=int(train_cfg["shuffle_buffer_chunks"]),
                                      noise=noise_model_of(train_data))  # noiseless storage: fresh noise per epoch
    # validation: fixed order and (noiseless storage) one fixed noise realisation, so epochs are comparable
    val_loader = ChunkShuffleLoader(val_data, whitening, min(bs, len(val_data)), seed=base_seed + 1, shuffle=False,
                                    drop_last=False, noise=noise_model_of(val_data))
    # not persistent: workers are re-forked every epoch and so see the epoch set by set_epoch()
    loader = torch.utils.data.DataLoader(train_loader, batch_size=None, num_workers=workers,
                                         pin_memory=device.type == "cuda")

    # max_epochs only shapes a cosine schedule: a plateau run may be resumed with a larger budget
    fp_train = dict(train_cfg) if per_step else {k: v for k, v in train_cfg.items() if k != "max_epochs"}
    fp = dict(fingerprint_cfg, train=fp_train, seed=seed, whitening=whitening.to_dict(), n_train=len(train_data),
              n_val=len(val_data))
    if in_channels != 1:
        fp["in_channels"] = in_channels
    fingerprint = config_hash(fp)
    ckpt_dir = Path(checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / "last.pt"
    history: list[dict[str, float]] = []
    best = {"loss": math.inf, "epoch": -1, "state": None}
    chosen: dict[str, Any] | None = None  # the train.select_epoch model (train.select: epoch)
    start_epoch, bad_epochs = 0, 0
    if ckpt_path.exists():
        try:
            ckpt = checkpoint.load(ckpt_path, map_location=device)  # weights_only: a checkpoint cannot run code
        except checkpoint.ModelFileError as exc:
            raise checkpoint.ModelFileError(f"{exc} Delete {ckpt_path} to train afresh.") from None
        if ckpt.get("fingerprint") == fingerprint:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            history, best, bad_epochs = ckpt["history"], ckpt["best"], ckpt["bad_epochs"]
            chosen = ckpt.get("chosen")
            start_epoch = ckpt["epoch"] + 1
            torch.set_rng_state(ckpt["torch_rng"])
            if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
            log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)
        else:
            log.info("ignoring checkpoint %s: it belongs to other settings or data", ckpt_path)

    max_epochs = int(train_cfg["max_epochs"])
    es = train_cfg["early_stopping"]
    select, select_epoch = selection(train_cfg)
    if select == "epoch":
        max_epochs = select_epoch  # the selected epoch is the last one trained
    elif bad_epochs >= int(es["patience"]):  # the checkpointed run had already stopped early: it is finished
        log.info("checkpoint %s is of a run that stopped early; nothing left to train", ckpt_path)
        max_epochs = start_epoch
    t_start = time.perf_counter()
    for epoch in range(start_epoch, max_epochs):
        t0 = time.perf_counter()
        model.train()
        train_loader.set_epoch(epoch)
        gen = torch.Generator().manual_seed(base_seed + 1000 + epoch)
        aug_gen = torch.Generator().manual_seed(base_seed + 5000 + epoch)
        total, n = 0.0, 0
        for x, theta in loader:
            if augment is not None:
                x, theta = augment(x, theta, aug_gen)
            opt.zero_grad(set_to_none=True)
            with _autocast(device):
                loss = loss_fn(model, _to(x, device), theta.to(device), gen)
            loss.backward()
            opt.step()
            if per_step:
                scheduler.step()
            total += _finite_loss(float(loss.detach()), kind, "training loss", epoch) * x.shape[0]
            n += x.shape[0]
        val_loss = _finite_loss(evaluate_loss(model, val_loader, device, base_seed + 2, loss_fn), kind,
                                "validation loss", epoch)
        if not per_step:
            scheduler.step(val_loss)
        row = {"epoch": epoch, "train_loss": total / max(n, 1), "val_loss": val_loss,
               "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        history.append(row)
        # one line per epoch: losses, learning rate, and the time left at the mean epoch time (early stopping may end
        # the run sooner)
        left = time_left(time.perf_counter() - t_start, epoch + 1 - start_epoch, max_epochs - start_epoch)
        log.info("%s epoch %d/%d train %.4f val %.4f lr %.2g (%.1f s; ≈ %s left)", kind, epoch + 1, max_epochs,
                 row["train_loss"], val_loss, row["lr"], row["seconds"], format_duration(left))
        if val_loss < best["loss"] - float(es["min_delta"]):
            bad_epochs = 0
        else:
            bad_epochs += 1
        if val_loss < best["loss"]:
            best = {"loss": val_loss, "epoch": epoch, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        if select == "epoch" and epoch == select_epoch - 1:
            chosen = {"loss": val_loss, "epoch": epoch, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        checkpoint.save({"fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": scheduler.state_dict(), "history": history, "best": best, "chosen": chosen,
                    "bad_epochs": bad_epochs,
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}, ckpt_path)
        if bad_epochs >= int(es["patience"]) and select == "best":
            log.info("early stopping after epoch %d", epoch)
            break

    if best["state"] is None:  # e.g. max_epochs reached before any epoch ran: never write a weightless model
        raise TrainingError(f"{kind} training: no epoch completed (checkpoint {ckpt_path}, max_epochs {max_epochs}); "
                            "no model written")
    with open(out_history, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    if select == "epoch" and chosen is None:
        raise RuntimeError(f"train.select_epoch: training ended after {len(history)} epochs, before epoch {select_epoch}")
    out = chosen if select == "epoch" else best
    log.info("%s: writing the model of epoch %d (train.select: %s; best validation loss at epoch %d)", kind,
             out["epoch"], select, best["epoch"])
    checkpoint.save(dict(blob, kind=kind, model=out["state"], in_channels=in_channels, whitening=whitening.to_dict(),
                    grid=checkpoint.training_grid([_first_shard_attrs(train_data)], train_data.image_shape),
                    best_epoch=best["epoch"], best_val_loss=best["loss"], select=select, selected_epoch=out["epoch"],
                    selected_val_loss=out["loss"], fingerprint=fingerprint), out_model)
    return {"best_epoch": best["epoch"], "best_val_loss": best["loss"], "epochs": len(history), "select": select,
            "selected_epoch": out["epoch"], "selected_val_loss": out["loss"]}


def selection(train_cfg: Mapping[str, Any]) -> tuple[str, int]:
    """(``train.select``, ``train.select_epoch``): 'best' (lowest validation loss) or 'epoch' (the model after
    ``select_epoch`` epochs, counted from 1; the reference's published model is its epoch-20 checkpoint)."""
    select = str(train_cfg.get("select", "best"))
    if select not in ("best", "epoch"):
        raise ValueError(f"train.select: {select!r} is not one of ['best', 'epoch']")
    if select == "best":
        return select, 0
    if train_cfg.get("select_epoch") is None:
        raise ValueError("train.select_epoch: required when train.select is 'epoch' (the reference's model: 20)")
    epoch = int(train_cfg["select_epoch"])
    if not 1 <= epoch <= int(train_cfg["max_epochs"]):
        raise ValueError(f"train.select_epoch: {epoch} must lie in [1, train.max_epochs = {train_cfg['max_epochs']}]")
    return select, epoch


def _first_shard_attrs(data: MergedDataset) -> dict[str, Any]:
    """Attributes of the first training shard (grid, bands, zero point: the same in every shard of a dataset)."""
    import zarr

    return dict(zarr.open_group(str(data.manifest.shard_paths()[0]), mode="r").attrs)


def train_ratio_estimator(
    *,
    train_dir: str | Path,
    train_masks: str | Path,
    val_dir: str | Path,
    val_masks: str | Path,
    whitening: Whitening,
    model_cfg: Mapping[str, Any],
    train_cfg: Mapping[str, Any],
    seed: int,
    out_model: str | Path,
    out_history: str | Path,
    checkpoint_dir: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """Train the ratio estimator (NRE loss, :func:`lensinfer.models.ratio.ratio_loss`; spec §3), write the best
    model (weights + whitening + configs) and ``history.csv``; returns a summary."""
    if whitening.targets != ("gamma_pop",):
        raise ValueError(f"the ratio estimator is trained on gamma_pop alone, not {whitening.targets}")
    return _fit(kind="nre", build=lambda ch: build_ratio_estimator(dict(model_cfg), in_channels=ch), loss_fn=ratio_loss,
                train_dir=train_dir, train_masks=train_masks, val_dir=val_dir, val_masks=val_masks, whitening=whitening,
                fingerprint_cfg={"model": dict(model_cfg)}, blob={"model_cfg": dict(model_cfg)}, train_cfg=train_cfg,
                seed=seed, out_model=out_model, out_history=out_history, checkpoint_dir=checkpoint_dir, threads=threads)


def _architecture(flow_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of the ``flow`` section that define the trained model (not n_samples or diagnostics settings)."""
    return {k: v for k, v in flow_cfg.items()
            if k in FLOW_DEFAULTS or k in ("targets", "embedding", "augment", "prior_support", "target_bounds")}


def prior_box(spec: Any) -> tuple[float, float] | None:
    """The support [low, high] of a bounded prior spec ({uniform: [lo, hi]} or {truncnormal: [μ, σ, lo, hi]}), else
    None (unbounded or fixed)."""
    if not isinstance(spec, Mapping) or len(spec) != 1:
        return None
    (kind, args), = dict(spec).items()
    if kind == "uniform":
        return float(args[0]), float(args[1])
    if kind == "truncnormal":
        return float(args[2]), float(args[3])
    return None


def whitened_target_bounds(whitening: Whitening, priors: Mapping[str, Any]) -> list[list[float] | None]:
    """Per target of ``whitening``: its prior box (:func:`prior_box`) in whitened units, or None."""
    out: list[list[float] | None] = []
    for t, m, s in zip(whitening.targets, whitening.target_mean, whitening.target_std):
        box = prior_box(priors.get(t))
        out.append(None if box is None else [(box[0] - m) / s, (box[1] - m) / s])
    return out


def flow_targets(flow_cfg: Mapping[str, Any]) -> list[str]:
    """The parameter columns of the posterior estimator (``flow.targets``, default ``["gamma_pop"]``)."""
    return list(flow_cfg.get("targets") or ["gamma_pop"])


def train_flow_posterior(
    *,
    train_dir: str | Path,
    train_masks: str | Path,
    val_dir: str | Path,
    val_masks: str | Path,
    whitening: Whitening | str | Path,
    flow_cfg: Mapping[str, Any],
    train_cfg: Mapping[str, Any],
    seed: int,
    out_model: str | Path,
    out_history: str | Path,
    checkpoint_dir: str | Path,
    threads: int = 1,
    target_priors: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the neural posterior estimator q(θ|x) (NPE: −log q loss, :func:`lensinfer.models.flow.flow_loss`).

    ``target_priors`` (target → prior spec of the training set, e.g. {"gamma_pop": {uniform: [1.1, 2.9]}}): with
    ``flow.prior_support: true`` (default false) targets with a bounded prior are modelled on its box
    (``target_bounds`` in the saved flow config; :class:`lensinfer.models.flow.FlowPosterior`, *bounded targets*),
    which removes the spikes of the γ curves at the prior edges that come from the flow's support.

    ``whitening`` is the training set's ``stats.json`` path (its constants for ``flow.targets`` are taken) or a
    :class:`Whitening` whose ``targets`` equal ``flow.targets``. ``flow.augment: dihedral`` trains on random
    rotations/reflections of the images with the targets transformed alike (:class:`DihedralAugmentation`).
    ``model.pt`` holds kind "npe", the flow config,
    the targets and the whitening (everything :func:`load_model` needs); ``history.csv`` has the NRE format.
    """
    targets = flow_targets(flow_cfg)
    if not isinstance(whitening, Whitening):
        whitening = load_whitening(whitening, targets)
    elif list(whitening.targets) != targets:
        raise ValueError(f"whitening targets {list(whitening.targets)} != flow.targets {targets}; "
                         "use load_whitening(stats_path, targets=flow_cfg['targets']) or pass the stats.json path")
    cfg = dict(flow_cfg)
    if cfg.get("prior_support", False) and target_priors:
        bounds = whitened_target_bounds(whitening, target_priors)
        if any(b is not None for b in bounds):
            cfg["target_bounds"] = bounds
    augment = cfg.get("augment", "none")
    if augment not in ("none", "dihedral"):
        raise ValueError(f"flow.augment: unknown {augment!r}; allowed: none, dihedral")
    return _fit(kind="npe", augment=DihedralAugmentation(whitening) if augment == "dihedral" else None,
                build=lambda ch: build_flow_posterior(cfg, len(targets), ch, whitening.zero_level), loss_fn=flow_loss,
                train_dir=train_dir, train_masks=train_masks, val_dir=val_dir, val_masks=val_masks, whitening=whitening,
                fingerprint_cfg={"kind": "npe", "flow": _architecture(cfg)}, blob={"flow_cfg": cfg, "targets": targets},
                train_cfg=train_cfg, seed=seed, out_model=out_model, out_history=out_history,
                checkpoint_dir=checkpoint_dir, threads=threads)


def load_estimator(path: str | Path, device: str | torch.device = "cpu") -> tuple[str, nn.Module, Whitening]:
    """(kind, model in eval mode, whitening) of a ``model.pt`` of either kind ("nre" or "npe").

    Read with ``weights_only=True`` (:func:`lensinfer.checkpoint.load_model_file`): a file holding anything but
    tensors and plain metadata, or no weights, is refused with :class:`lensinfer.checkpoint.ModelFileError`."""
    blob = checkpoint.load_model_file(path, map_location=device)
    kind = blob.get("kind", "nre")
    in_channels = int(blob.get("in_channels", 1))
    if kind == "npe":
        model: nn.Module = build_flow_posterior(blob["flow_cfg"], len(blob["targets"]), in_channels)
    elif kind == "nre":
        model = build_ratio_estimator(blob["model_cfg"], in_channels=in_channels)
    else:
        raise ValueError(f"{path}: unknown estimator kind {kind!r}")
    model.load_state_dict(blob["model"])
    model.eval().to(device)
    return kind, model, Whitening(**blob["whitening"])


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Whitening]:
    """A trained estimator (:class:`RatioEstimator` or :class:`FlowPosterior`) in eval mode and its whitening."""
    _, model, whitening = load_estimator(path, device)
    return model, whitening


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Rows of ``history.csv`` as floats (for plots and reports)."""
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
