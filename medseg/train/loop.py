"""The training loop: MONAI CacheDataset, seeded patch batches, Dice+CE, sliding-window validation.

Deterministic transforms (read, reorient, resample, normalise) run once per
case and are cached; random patch sampling and augmentation run every epoch,
on the GPU when CUDA is present. Each epoch re-seeds the random transforms and
the shuffling from ``(seed, epoch)``, so a seeded run is reproducible on the
CPU and a resumed run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg import __version__
from medseg.atomic import atomic_path, write_text_atomic
from medseg.config import WorkflowConfig, as_config
from medseg.errors import ConfigError, ModelError, WriteError
from medseg.models.networks import build_network
from medseg.models.store import CARD_NAME, save_model_dir, torch_load
from medseg.preprocess import resolve_device
from medseg.train.dataset import Case, load_cases, read_dataset

CHECKPOINT_NAME = "checkpoint_last.pt"
LOG_NAME = "train_log.csv"


def _loss(config: WorkflowConfig) -> torch.nn.Module:
    from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss

    c = config.loss
    if c.name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True)
    if c.name == "dice_focal":
        return DiceFocalLoss(to_onehot_y=True, softmax=True, lambda_dice=c.lambda_dice, lambda_focal=c.lambda_ce)
    lambda_dice = 0.0 if c.name == "ce" else c.lambda_dice
    return DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=lambda_dice, lambda_ce=c.lambda_ce)


def _optimizer(config: WorkflowConfig, params: Any) -> torch.optim.Optimizer:
    c = config.optimizer
    if c.name == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=True)
    cls = torch.optim.AdamW if c.name == "adamw" else torch.optim.Adam
    return cls(params, lr=c.lr, weight_decay=c.weight_decay)


def _lr_factor(config: WorkflowConfig, epoch: int, progress: float) -> float:
    """Learning-rate multiplier of ``epoch``: linear warm-up, then poly / cosine / constant over ``progress``.

    ``progress`` in [0, 1] is the share of training done (see :func:`_progress_share`); the
    annealing part of the schedule starts after the warm-up epochs.
    """
    c = config.optimizer
    if epoch < c.warmup_epochs:
        return (epoch + 1) / (c.warmup_epochs + 1)
    t = min(1.0, max(0.0, progress))
    if c.schedule == "poly":
        return (1 - t) ** 0.9
    if c.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    return 1.0


def _progress_share(config: WorkflowConfig, epoch: int, n_epochs: int, session_s: float, budget_s: float) -> float:
    """Share of training done at the start of ``epoch``, counted after the warm-up.

    By epochs (``optimizer.anneal_over: epochs``); with ``budget``, the larger of
    that and the share of this call's time budget used (``session_s / budget_s``).
    """
    warmup = config.optimizer.warmup_epochs
    by_epochs = (epoch - warmup) / max(1, n_epochs - warmup)
    if config.optimizer.anneal_over == "budget" and math.isfinite(budget_s):
        return max(by_epochs, session_s / budget_s)
    return by_epochs


def _seed_everything(seed: int) -> None:
    from monai.utils import set_determinism

    set_determinism(seed=seed)


class _Log:
    """The CSV training log: one row per epoch (loss, learning rate, per-label Dice when validated, seconds)."""

    def __init__(self, path: Path, label_names: list[str], resume: bool) -> None:
        self.path = path
        self.fields = ["epoch", "loss", "lr", *[f"dice_{n}" for n in label_names], "dice_mean", "epoch_s", "elapsed_s"]
        self.rows: list[dict[str, Any]] = []
        if resume and path.is_file():
            with open(path, newline="") as fh:
                self.rows = list(csv.DictReader(fh))

    def add(self, row: dict[str, Any]) -> None:
        self.rows = [r for r in self.rows if int(r["epoch"]) < int(row["epoch"])] + [row]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buf.getvalue())


def _validate(
    network: torch.nn.Module, items: list[dict[str, Any]], config: WorkflowConfig, device: torch.device
) -> dict[str, float]:
    """Per-label Dice of the sliding-window prediction on the cached validation cases (on the model grid)."""
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    from medseg.infer import sliding_window_probabilities

    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
    network.eval()
    for item in items:
        x = torch.as_tensor(item["image"])[None].to(device)
        y = torch.as_tensor(item["label"])[None].to(device)
        probs = sliding_window_probabilities(network, x, config)
        pred = torch.argmax(probs, dim=1, keepdim=True)
        metric(one_hot(pred, config.n_labels), one_hot(y.long(), config.n_labels))
    per_label = metric.aggregate().cpu().numpy()
    return {name: float(v) for name, v in zip(config.label_names[1:], per_label, strict=True)}


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _summary(cases: list[Case]) -> dict[str, Any]:
    first = cases[0].image
    return {
        "cases": [c.case_id for c in cases],
        "n_cases": len(cases),
        "modality": first.modality,
        "spacing_mm_range": [
            [
                float(f"{min(c.image.spacing[a] for c in cases):.4g}"),  # 4 significant digits (um pixels too)
                float(f"{max(c.image.spacing[a] for c in cases):.4g}"),
            ]
            for a in range(first.ndim)
        ],
        "orientations": sorted({c.image.orientation for c in cases}),
    }


def train(
    config: WorkflowConfig | str | os.PathLike[str] | dict[str, Any],
    dataset_json: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    max_minutes: float | None = None,
    max_epochs: int | None = None,
    seed: int = 0,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    fold_of: Sequence[int] | None = None,
) -> Path:
    """Train a segmentation model on an MSD-style dataset; returns the model directory.

    Parameters
    ----------
    config : WorkflowConfig, path or dict
        The workflow (a ``configs/*.yaml`` path is read and validated).
    dataset_json : path-like
        MSD ``dataset.json`` (see :mod:`medseg.train.dataset`).
    out_dir : path-like
        Becomes a model directory: ``model.safetensors`` (best validation
        Dice) + ``model_card.json``, plus ``train_log.csv`` and
        ``checkpoint_last.pt`` (for ``resume``).
    max_minutes : float, optional
        Wall-clock budget of this call; training stops after the epoch that
        leaves too little time for another. Overrides ``train.max_minutes``.
    max_epochs : int, optional
        Overrides ``train.max_epochs``.
    seed : int
        Seeds network initialisation, patch sampling, augmentation and the
        validation split; two runs with the same seed on the CPU give identical weights.
    resume : bool
        Continue from ``out_dir/checkpoint_last.pt``.
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` follows the config (CUDA when available).
    progress : bool
        Show a progress bar on stderr.
    fold_of : sequence of int, optional
        The cross-validation fold of each training entry; ``config.train.fold`` is the one validated on
        (see :func:`medseg.train.crossval.cross_validate`).

    Raises
    ------
    medseg.errors.ConfigError, medseg.errors.LabelError
        Bad config or dataset description; invalid cases (all listed, each with its file).
    """
    cfg = as_config(config)
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if out.exists() and not out.is_dir():
        raise WriteError("is a file, but the output of training is a folder", out)
    if not resume and (ckpt_path.exists() or (out / CARD_NAME).exists()):
        raise ConfigError("output folder already holds a training run; resume it or choose another folder", out)
    if max_epochs is not None and max_epochs < 1:
        raise ConfigError(f"must be at least 1, got {max_epochs}", "max_epochs")
    if max_minutes is not None and not max_minutes > 0:
        raise ConfigError(f"must be a positive number of minutes, got {max_minutes}", "max_minutes")
    dev = resolve_device(cfg.device if device == "auto" else device)
    checkpoint = torch_load(ckpt_path, "checkpoint", map_location=dev) if resume and ckpt_path.is_file() else None
    n_epochs = max_epochs or cfg.train.max_epochs
    budget_s = 60.0 * (max_minutes or cfg.train.max_minutes or math.inf)
    command = " ".join(
        [
            f"medseg train {config if isinstance(config, str | os.PathLike) else '<config>'} --data {dataset_json} --out {out_dir}"
        ]
        + [f"--seed {seed}", f"--device {device}"]
        + ([f"--max-minutes {max_minutes:g}"] if max_minutes else [])
        + ([f"--max-epochs {max_epochs}"] if max_epochs else [])
    )

    split = read_dataset(dataset_json, cfg, seed=seed, fold_of=fold_of)
    entries = list(
        dict.fromkeys(split.train + split.val)
    )  # every case read and checked once, all problems reported together
    by_image = {c.image_path: c for c in load_cases(entries, cfg, Path(dataset_json), split.spacing_mm)}
    train_cases, val_cases = [by_image[i] for i, _ in split.train], [by_image[i] for i, _ in split.val]

    _seed_everything(seed)
    data = _Data(cfg, train_cases, val_cases, dev)
    torch.manual_seed(seed)
    run = _Run(cfg, dev, n_epochs, budget_s)
    if checkpoint is not None:
        run.restore(checkpoint, ckpt_path)
    log = _Log(out / LOG_NAME, cfg.label_names[1:], resume)
    provenance = {
        "how": "medseg train",
        "command": command,
        "dataset": split.name,
        "validation_split": split.how,
        "train_data": _summary(train_cases),
        "validation_cases": [c.case_id for c in val_cases],
        "seed": seed,
        "device": str(dev),
        "versions": {
            "medseg": __version__,
            "torch": torch.__version__,
            "monai": _monai_version(),
            "python": sys.version.split()[0],
        },
    }

    def save_best(stopped: str) -> None:
        training = {**provenance, "epochs_run": run.epoch, "seconds": round(run.elapsed_s, 1), "stopped": stopped}
        validation = {
            "dice": run.best_dice_per_label,
            "dice_mean": run.best_dice,
            "epoch": run.best_epoch,
            "grid": "model grid (after resampling to spacing_mm)",
        }
        save_model_dir(out, run.best_state, cfg, training=training, validation=validation)

    stop_reason = ""
    epoch_times: list[float] = []
    with _progress(progress) as bar:
        task = bar.add_task("training", total=n_epochs, completed=run.epoch, status="")
        while run.epoch < n_epochs and not stop_reason:
            tic = time.monotonic()
            data.reseed(seed * 100_003 + run.epoch)  # per-epoch seeds: a resumed run continues exactly
            loss, lr = run.train_epoch(data.batches())
            epoch_times.append(time.monotonic() - tic)
            out_of_time = run.session_s + float(np.mean(epoch_times[-3:])) > budget_s
            row: dict[str, Any] = {"epoch": run.epoch, "loss": round(loss, 5), "lr": f"{lr:.3g}"}
            status = f"loss {loss:.4f}"
            if run.epoch % cfg.train.val_every == 0 or run.epoch == n_epochs or out_of_time:
                dice = _validate(run.network, data.val_items, cfg, dev)
                mean = float(np.nanmean(list(dice.values())))
                row.update({f"dice_{k}": round(v, 4) for k, v in dice.items()}, dice_mean=round(mean, 4))
                if run.record_validation(dice, mean):
                    save_best("running")  # an interrupted run still leaves its best model
                status += f"  dice {mean:.3f} (best {run.best_dice:.3f} @ {run.best_epoch})"
            row.update(epoch_s=round(epoch_times[-1], 2), elapsed_s=round(run.elapsed_s, 1))
            log.add(row)
            patience = cfg.train.early_stop_patience
            if patience is not None and run.stale >= patience:
                stop_reason = f"early stopping: {patience} validations without improvement"
            elif out_of_time and run.epoch < n_epochs:
                stop_reason = f"time budget of {budget_s / 60:.3g} min"
            with atomic_path(ckpt_path) as tmp:
                torch.save(run.checkpoint(), tmp)
            bar.update(task, completed=run.epoch, status=status)
    save_best(stop_reason or f"max_epochs ({n_epochs}) reached")
    return out


class _Data:
    """Cached training/validation data and the seeded stream of random training patches.

    A ``CacheDataset`` runs the deterministic transforms once per case and keeps
    the results in host memory (``cache``). Each epoch visits the cases in a
    seeded random order and draws ``train.samples_per_image`` augmented patches
    from each (the random transforms get copies of the cached tensors, made on
    ``device``, so drawing never changes the cache); the patches are shuffled
    within a pool of a batch plus one case's patches and stacked into batches
    of ``train.batch_size`` patches: one optimiser step per batch, about
    ``n_cases * samples_per_image / batch_size`` steps per epoch.
    """

    def __init__(
        self, cfg: WorkflowConfig, train_cases: list[Case], val_cases: list[Case], device: torch.device
    ) -> None:
        from monai.data import CacheDataset

        from medseg.preprocess import cached_transforms, random_transforms

        cached = cached_transforms(cfg)
        self.device = device
        self.batch_size = cfg.train.batch_size
        self.pool = cfg.train.batch_size + cfg.train.samples_per_image
        self.randoms = random_transforms(cfg, device)
        # stain jitter works on the raw RGB: training cases are cached before the intensity preset, which follows it
        train_cached = cached_transforms(cfg, intensity=not cfg.augment.hed_jitter)
        self.cache = CacheDataset([c.as_item() for c in train_cases], transform=train_cached, progress=False)
        self.val_items = [cached(c.as_item()) for c in val_cases]
        self.generator = torch.Generator()

    def _draw(self, cached_item: dict[str, Any]) -> list[dict[str, Any]]:
        """Random patches (augmented) of one cached case.

        The random transforms get copies of the cached tensors, made on the
        device; the per-class voxel indices are only read, so they are shared.
        """
        item = {k: v.to(self.device, copy=True) if torch.is_tensor(v) else v for k, v in cached_item.items()}
        patches = self.randoms(item)
        return patches if isinstance(patches, list) else [patches]

    def batches(self) -> Any:
        """One epoch of ``{"image", "label"}`` batches of ``batch_size`` patches (the last one may be smaller)."""
        pool: list[dict[str, Any]] = []
        for index in torch.randperm(len(self.cache), generator=self.generator).tolist():
            pool.extend(self._draw(self.cache[index]))
            while len(pool) >= self.pool:
                yield self._take(pool, self.batch_size)
        while pool:
            yield self._take(pool, min(self.batch_size, len(pool)))

    def _take(self, pool: list[dict[str, Any]], n: int) -> dict[str, torch.Tensor]:
        """``n`` patches drawn at random out of ``pool``, stacked."""
        picks = sorted(torch.randperm(len(pool), generator=self.generator)[:n].tolist(), reverse=True)
        chosen = [pool.pop(i) for i in picks]
        return {key: torch.stack([torch.as_tensor(p[key]) for p in chosen]) for key in ("image", "label")}

    def reseed(self, seed: int) -> None:
        """Seed patch sampling, augmentation and shuffling for one epoch."""
        self.randoms.set_random_state(seed=seed)
        self.generator.manual_seed(seed)


class _Run:
    """Network, optimiser, schedule and the bookkeeping that a checkpoint saves and ``resume`` restores."""

    def __init__(self, cfg: WorkflowConfig, device: torch.device, n_epochs: int, budget_s: float) -> None:
        self.cfg, self.n_epochs, self.budget_s = cfg, n_epochs, budget_s
        self.device = device
        self.use_amp = cfg.amp and device.type == "cuda"
        self.network = build_network(cfg).to(device)
        self.loss_fn = _loss(cfg)
        self.optimizer = _optimizer(cfg, self.network.parameters())
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.epoch, self.stale = 0, 0
        self.progress = 0.0  # share of the schedule done (never decreases, kept over resume)
        self.best_dice, self.best_epoch = -1.0, -1
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_dice_per_label: dict[str, float] = {}
        self.elapsed_before = 0.0  # training seconds of earlier sessions (resume)
        self.started = time.monotonic()

    @property
    def session_s(self) -> float:
        """Seconds since this call started training."""
        return time.monotonic() - self.started

    @property
    def elapsed_s(self) -> float:
        """Training seconds over all sessions of this run."""
        return self.elapsed_before + self.session_s

    def train_epoch(self, batches: Any) -> tuple[float, float]:
        """One pass over the training patches; returns the mean loss and the learning rate used."""
        self.progress = max(
            self.progress, _progress_share(self.cfg, self.epoch, self.n_epochs, self.session_s, self.budget_s)
        )
        lr = self.cfg.optimizer.lr * _lr_factor(self.cfg, self.epoch, self.progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.network.train()
        losses = []
        for batch in batches:
            x, y = batch["image"].to(self.device), batch["label"].to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, enabled=self.use_amp):
                loss = self.loss_fn(self.network(x), y)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            losses.append(float(loss.detach()))
        self.epoch += 1
        return float(np.mean(losses)), lr

    def record_validation(self, dice: dict[str, float], mean: float) -> bool:
        """Keep the weights when ``mean`` Dice improves; returns whether it did."""
        if not self.best_state or mean > self.best_dice + 1e-4:
            self.best_dice, self.best_epoch, self.stale = mean, self.epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
            self.best_dice_per_label = dice
            return True
        self.stale += 1
        return False

    def checkpoint(self) -> dict[str, Any]:
        """Everything ``resume`` needs, as tensors and plain values (loads with ``weights_only=True``)."""
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "progress": self.progress,
            "scaler": self.scaler.state_dict(),
            "best_network": self.best_state,
            "best_dice_per_label": self.best_dice_per_label,
            "epoch": self.epoch,
            "stale": self.stale,
            "best_dice": self.best_dice,
            "best_epoch": self.best_epoch,
            "elapsed_s": self.elapsed_s,
        }

    def restore(self, ck: Any, path: Path) -> None:
        """Continue from a :meth:`checkpoint` read from ``path``; :class:`ModelError` when it does not fit."""
        if not isinstance(ck, dict):
            raise ModelError(f"not a medseg training checkpoint (holds a {type(ck).__name__})", path)
        try:
            self.network.load_state_dict(ck["network"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.progress = float(ck.get("progress", 0.0))  # checkpoints of earlier versions: epochs decide
            self.scaler.load_state_dict(ck["scaler"])
            self.best_state, self.best_dice_per_label = dict(ck["best_network"]), dict(ck["best_dice_per_label"])
            self.epoch, self.stale = int(ck["epoch"]), int(ck["stale"])
            self.best_dice, self.best_epoch = float(ck["best_dice"]), int(ck["best_epoch"])
            self.elapsed_before = float(ck["elapsed_s"])
        except KeyError as exc:
            raise ModelError(f"not a medseg training checkpoint (no {exc.args[0]!r} entry)", path) from exc
        except (RuntimeError, TypeError, ValueError) as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ModelError(f"checkpoint does not fit this workflow config ({detail})", path) from exc


def _monai_version() -> str:
    import monai

    return monai.__version__
