"""Two-phase fit of a classifier, after the reference paper's freeze-then-unfreeze recipe.

Phase 1 trains CBAM and the head on a frozen ImageNet backbone; phase 2 unfreezes everything at a
lower rate with linear warm-up and cosine decay. Each epoch is checkpointed atomically (`last.*`);
the weights kept (`best.*`) are those of the best validation macro-F1 (`keep="best"`) or the final ones
(`keep="last"`). With `ema_decay` set, an exponential moving average of the weights is kept beside
them and is what gets validated, early-stopped on and kept. Every candidate (raw and EMA, best epoch
and final) is saved under `candidates/` and scored on validation and test, with and without
dihedral test-time augmentation, so recipe levers are compared on validation from one run. A model
with no pretrained backbone (SimpleCNN, or --no-pretrained) has nothing worth freezing, so both its
phases train all layers.

A pretrained backbone keeps its BatchNorm running statistics in both phases (its affine weights
train in phase 2): with batches of 16 smear crops, switching BatchNorm to batch statistics at the
start of phase 2 made the loss jump back to chance level on HuSHeM, and adapting them already in
phase 1 slowed phase 1 down.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from timm.data import Mixup
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from sperm_edge.card import ModelCard
from sperm_edge.data.augment import augmentation
from sperm_edge.data.folder import ImageFolder
from sperm_edge.data.presets import abnormal_classes
from sperm_edge.errors import SpermEdgeError
from sperm_edge.hardware import cpu_name
from sperm_edge.io import atomic_write_json
from sperm_edge.metrics import classification_report, softmax
from sperm_edge.model import create_model, get_entry
from sperm_edge.model.architectures import freeze_batchnorm_statistics
from sperm_edge.model.checkpoint import save_checkpoint
from sperm_edge.train.calibrate import fit_and_report
from sperm_edge.train.config import Balance, Keep, TrainConfig
from sperm_edge.train.dataset import TensorImages
from sperm_edge.train.distill import distill_loss, load_teacher, teacher_path
from sperm_edge.train.distributed import World, barrier, gather_rows, mean_over_ranks
from sperm_edge.train.plots import plot_confusion, plot_curves
from sperm_edge.train.resume import load_optimizer, save_optimizer
from sperm_edge.tta import dihedral_views, mean_over_views

log = logging.getLogger(__name__)

CANDIDATES = "candidates"  # folder of a run holding every candidate's weights: {raw,ema}-{best,last}


class Reporter(Protocol):
    """What the trainer tells whoever shows progress (the CLI draws rich bars from it)."""

    def phase_start(self, phase: int, epochs: int, trainable: int, total: int) -> None: ...
    def epoch_start(self, phase: int, epoch: int, steps: int) -> None: ...
    def step(self, loss: float) -> None: ...
    def epoch_end(self, record: dict) -> None: ...


class SilentReporter:
    def phase_start(self, phase: int, epochs: int, trainable: int, total: int) -> None:
        log.info("phase %d: %d epochs, %s of %s parameters trainable", phase, epochs, f"{trainable:,}", f"{total:,}")

    def epoch_start(self, phase: int, epoch: int, steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def epoch_end(self, record: dict) -> None:
        log.info(
            "phase %(phase)d epoch %(epoch)d: loss %(train_loss).4f val acc %(val_accuracy).3f "
            "val macro-F1 %(val_macro_f1).3f",
            record,
        )


@dataclass
class Progress:
    """Where a run stands; saved in `last.json` so `--resume` continues from the next epoch."""

    phase: int = 1
    epoch: int = 0  # epochs completed in the current phase
    best_f1: float = -1.0  # of the kept model (the EMA when there is one)
    best_epoch: int = 0
    candidate_f1: dict[str, float] = field(default_factory=dict)  # best validation macro-F1 per tracked model
    bad_epochs: int = 0
    seconds: float = 0.0  # training wall time, summed over resumed sessions
    history: list[dict] = field(default_factory=list)


@dataclass
class Phase:
    number: int
    epochs: int
    lr: float
    warmup: int
    freeze_backbone: bool


def _set_trainable(model: nn.Module, freeze_backbone: bool) -> tuple[int, int]:
    for param in model.backbone.parameters():
        param.requires_grad = not freeze_backbone
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def lr_schedule(optimizer: torch.optim.Optimizer, phase: Phase, steps_per_epoch: int) -> LRScheduler:
    """Per step: linear warm-up over `phase.warmup` epochs, then cosine decay to 1% of the rate."""
    total = max(phase.epochs * steps_per_epoch, 1)
    warm = min(phase.warmup * steps_per_epoch, total - 1)
    cosine = CosineAnnealingLR(optimizer, T_max=max(total - warm, 1), eta_min=0.01 * phase.lr)
    if warm == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1.0 / warm, end_factor=1.0, total_iters=max(warm - 1, 1))
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warm])


def class_weights(labels: list[int], classes: list[str]) -> torch.Tensor:
    """scikit-learn's balanced weights, n / (k * count): each class weighs as much in the loss."""
    missing = sorted(set(range(len(classes))) - set(labels))
    if missing:
        names = ", ".join(classes[i] for i in missing)
        raise SpermEdgeError(f"the training split has no image of {names}: the data set is too small to split")
    weights = compute_class_weight("balanced", classes=np.arange(len(classes)), y=np.asarray(labels))
    return torch.as_tensor(weights, dtype=torch.float32)


@torch.inference_mode()
def _predict(
    model: nn.Module, loader: DataLoader, device: torch.device, tta: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of a whole loader; `tta` averages the logits of the 8 dihedral views."""
    model.eval()
    logits, labels = [], []
    for images, targets in loader:
        images = images.to(device)
        if tta:
            images = dihedral_views(images)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            out = model(images.contiguous(memory_format=torch.channels_last)).float()
        logits.append((mean_over_views(out) if tta else out).cpu().numpy())
        labels.append(targets.numpy())
    return np.concatenate(logits), np.concatenate(labels)


def _device_name(device: torch.device) -> str:
    """What trained a model, for reports that merge runs from several machines: 'cuda: NAME' or 'cpu: MODEL'."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_name()}"


class Trainer:
    """Fits one model on one split of an ImageFolder and writes a run folder."""

    def __init__(
        self,
        cfg: TrainConfig,
        dataset: ImageFolder,
        split: dict[str, list[int]],
        out: Path,
        reporter: Reporter | None = None,
        fold: int | None = None,
        world: World = World(),
    ) -> None:
        """`fold`: this run's fold of a k-fold run (which fold of a k-fold teacher run to distil from); `world`: the
        training processes of a torchrun job, which split each batch (`cfg.batch_size` is the whole step's)."""
        self.cfg, self.dataset, self.split, self.out, self.world = cfg, dataset, split, Path(out), world
        self.reporter = reporter or SilentReporter()
        self.entry = get_entry(cfg.arch)
        preset = dataset.preset
        self.spec = self.entry.preprocess(cfg.img_size or (preset.img_size if preset.classes else None))
        self.device = world.device(cfg.device)
        if cfg.batch_size % world.size:
            raise SpermEdgeError(f"--batch-size {cfg.batch_size} does not split evenly over {world.size} processes")
        if world.distributed and cfg.balance == "sampler":
            raise SpermEdgeError(
                "--balance sampler draws one weighted sample of the data: use --balance loss with torchrun"
            )
        torch.manual_seed(cfg.seed)
        self.model = create_model(
            cfg.arch, len(dataset.classes), pretrained=cfg.pretrained and cfg.weights is None, weights=cfg.weights
        )
        self.model = self.model.to(self.device).to(memory_format=torch.channels_last)
        self.forward: nn.Module = self.model  # what training steps call: the model, or its DDP wrapper (`_run_phase`)
        for name, choices in (("keep", Keep), ("balance", Balance)):
            allowed = [choice.value for choice in choices]
            if getattr(cfg, name) not in allowed:
                raise SpermEdgeError(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
        if not 0.0 <= cfg.ema_decay < 1.0:
            raise SpermEdgeError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema_decay > 0
            else None
        )
        self.pretrained = (cfg.pretrained and self.entry.pretrained is not None) or cfg.weights is not None
        p1 = cfg.phase1_epochs if cfg.phase1_epochs is not None else preset.phase1_epochs
        p2 = cfg.phase2_epochs if cfg.phase2_epochs is not None else preset.phase2_epochs
        self.phases = [
            Phase(1, p1, cfg.phase1_lr, 0, freeze_backbone=self.pretrained),
            Phase(2, p2, cfg.phase2_lr, cfg.warmup_epochs, freeze_backbone=False),
        ]
        for name in ("train", "val", "test"):
            if not split.get(name):
                raise SpermEdgeError(f"the {name} split of {dataset.root} is empty; the data set is too small")
        train_labels = [dataset.labels[i] for i in split["train"]]
        self.train_set = TensorImages(
            [dataset.images[i] for i in split["train"]],
            train_labels,
            self.spec,
            replace(augmentation(cfg.augment), alone_p=cfg.alone, stain_p=cfg.stain),
            seed=cfg.seed,
        )
        self.val_set = self._eval_set("val")
        self.test_set = self._eval_set("test")
        self.val_shard = self._eval_set("val", world.shard) if world.distributed else self.val_set
        weights = class_weights(train_labels, dataset.classes)
        loss_w = weights.to(self.device) if cfg.balance == "loss" else None
        self.criterion = nn.CrossEntropyLoss(weight=loss_w, label_smoothing=cfg.label_smoothing)
        # MixUp pairs each image with its mirror in the batch and mixes the (smoothed) one-hot targets with it;
        # torch's cross-entropy takes those soft targets with the class weights (but averages over the batch, where
        # on hard targets it divides by the sum of the targets' weights: the same loss scaled by their mean weight).
        self.mixup = None
        if cfg.mixup > 0:
            smoothing, classes = cfg.label_smoothing, len(dataset.classes)
            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=0.0, label_smoothing=smoothing, num_classes=classes)
        self.soft_criterion = nn.CrossEntropyLoss(weight=loss_w)
        self.sample_weights = weights[torch.as_tensor(train_labels)] if cfg.balance == "sampler" else None
        paths = dataset.relative_paths()
        self.split_record = {  # saved with every checkpoint: built once, not per save
            "seed": cfg.seed,
            "data": str(dataset.root.resolve()),
            **{name: [paths[i] for i in idx] for name, idx in split.items()},
        }
        if (cfg.distill > 0) != (cfg.teacher is not None) or not 0.0 <= cfg.distill <= 1.0:
            raise SpermEdgeError(f"distillation needs a teacher and a weight in (0, 1]: {cfg.teacher}, {cfg.distill}")
        self.teacher = (
            load_teacher(teacher_path(cfg.teacher, fold), self.spec, dataset.classes, self.split_record, self.device)
            if cfg.teacher
            else None
        )

    def _tracked(self) -> dict[str, nn.Module]:
        """The models validated every epoch: the trained weights and, with EMA, their average."""
        return {"raw": self.model} | ({"ema": self.ema.module} if self.ema is not None else {})

    @property
    def _selected(self) -> str:
        return "ema" if self.ema is not None else "raw"

    def _eval_set(self, name: str, part: Callable[[list[int]], list[int]] = list) -> TensorImages:
        idx = part(self.split[name])
        return TensorImages([self.dataset.images[i] for i in idx], [self.dataset.labels[i] for i in idx], self.spec)

    def _loader(self, dataset: TensorImages, train: bool, epoch: int = 0) -> DataLoader:
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        sampler = None
        if train and self.sample_weights is not None:
            sampler = WeightedRandomSampler(self.sample_weights, len(dataset), generator=generator)
        elif train:  # one seeded shuffle an epoch, shared by all ranks: each step's batches together are the batch
            # a single process draws at that step (rank r takes every size-th image of it)
            sampler = DistributedSampler(dataset, self.world.size, self.world.rank, seed=self.cfg.seed * 1000)
            sampler.set_epoch(epoch)
        batch_size = self.cfg.batch_size // self.world.size if train else self.cfg.batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            generator=generator,
            drop_last=train and len(dataset) > self.cfg.batch_size,
            # Workers start afresh each epoch (not persistent), so they see the dataset's new epoch seed.
            num_workers=self.cfg.workers if train else 0,
            pin_memory=train and self.device.type == "cuda",
        )

    def _meta(self, progress: Progress, metrics: dict | None = None) -> dict:
        preset, classes = self.dataset.preset, self.dataset.classes
        card = ModelCard(
            self.cfg.arch, classes, self.spec, preset.normal_class, abnormal_classes(classes, preset.normal_class)
        )
        return {
            **card.to_record(),
            "preset": preset.name,
            "config": self.cfg.to_dict(),
            "progress": progress.__dict__,
            "metrics": metrics or {},
            "split": self.split_record,
            "world_size": self.world.size,
        }

    def fit(self, resume: bool = False) -> dict:
        """Run both phases (continuing from `last.*` when resuming), then test the best model."""
        self.out.mkdir(parents=True, exist_ok=True)
        progress = self._restore() if resume else Progress()
        if not resume and self.world.main:  # candidates of an earlier run in this folder must not be scored
            shutil.rmtree(self.out / CANDIDATES, ignore_errors=True)
        for phase in self.phases:
            if phase.number < progress.phase or phase.epochs == 0:
                continue
            if phase.number > progress.phase:
                progress.phase, progress.epoch, progress.bad_epochs = phase.number, 0, 0
            self._run_phase(phase, progress, resume and progress.epoch > 0)
        return self._finish(progress)

    def _optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=phase.lr, weight_decay=self.cfg.weight_decay)

    def _run_phase(self, phase: Phase, progress: Progress, resumed: bool) -> None:
        trainable, total = _set_trainable(self.model, phase.freeze_backbone)
        self.reporter.phase_start(phase.number, phase.epochs, trainable, total)
        # DDP hooks the parameters that train when it wraps the model, so each phase wraps it anew.
        self.forward = DistributedDataParallel(self.model) if self.world.distributed else self.model
        optimizer = self._optimizer(phase)
        steps_per_epoch = len(self._loader(self.train_set, train=True))
        scheduler = lr_schedule(optimizer, phase, steps_per_epoch)
        if resumed:
            load_optimizer(self.out / "last.optim.safetensors", optimizer)
            with warnings.catch_warnings():  # replayed without optimizer steps, which torch warns of
                warnings.filterwarnings("ignore", "Detected call of", UserWarning)
                for _ in range(progress.epoch * steps_per_epoch):
                    scheduler.step()  # the schedule is a function of the step: replayed, not saved
        scaler = torch.amp.GradScaler(enabled=self.device.type == "cuda")
        while progress.epoch < phase.epochs and progress.bad_epochs < self.cfg.patience:
            epoch = progress.epoch
            self.train_set.epoch = phase.number * 10_000 + epoch
            loader = self._loader(self.train_set, train=True, epoch=self.train_set.epoch)
            self.reporter.epoch_start(phase.number, epoch + 1, len(loader))
            started = time.perf_counter()
            mean, count = self._train_epoch(phase, loader, optimizer, scheduler, scaler, epoch)
            loss = mean_over_ranks(self.world, mean, count, self.device)
            progress.epoch += 1
            record = {"phase": phase.number, "epoch": progress.epoch, "train_loss": loss}
            scores = self._validate()
            val = scores[self._selected]
            record |= {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"]}
            if self.ema is not None:
                record |= {"raw_val_accuracy": scores["raw"]["accuracy"], "raw_val_macro_f1": scores["raw"]["macro_f1"]}
            record["lr"] = optimizer.param_groups[0]["lr"]
            progress.seconds += time.perf_counter() - started
            progress.history.append(record)
            if val["macro_f1"] > progress.best_f1:
                progress.best_f1, progress.best_epoch, progress.bad_epochs = val["macro_f1"], len(progress.history), 0
            else:
                progress.bad_epochs += 1
            for name, model in self._tracked().items():
                if scores[name]["macro_f1"] > progress.candidate_f1.get(name, -1.0):
                    progress.candidate_f1[name] = scores[name]["macro_f1"]
                    self._save(CANDIDATES + f"/{name}-best", model, self._meta(progress, {"val": scores[name]}))
            self._save("last", self.model, self._meta(progress))
            if self.ema is not None:
                self._save("last-ema", self.ema, self._meta(progress))
            if self.world.main:
                save_optimizer(self.out / "last.optim.safetensors", optimizer)
            self.reporter.epoch_end(record)
        if progress.bad_epochs >= self.cfg.patience:
            log.info(
                "phase %d stopped early: no better validation macro-F1 for %d epochs", phase.number, self.cfg.patience
            )

    def _save(self, name: str, model: nn.Module, meta: dict) -> None:
        """A checkpoint in the run folder, written by the main process only."""
        if self.world.main:
            save_checkpoint(self.out / name, model, meta)

    def _validate(self) -> dict[str, dict]:
        """The validation report of every tracked model; under torchrun each rank predicts its share of the
        split and all ranks score the gathered whole, so they take the same early-stopping decisions."""
        loader = self._loader(self.val_shard, train=False)
        scores = {}
        for name, model in self._tracked().items():
            logits, labels = _predict(model, loader, self.device)
            logits, labels = gather_rows(self.world, logits), gather_rows(self.world, labels)
            scores[name] = classification_report(labels, softmax(logits), self.dataset.classes)
        return scores

    def _train_epoch(
        self,
        phase: Phase,
        loader: DataLoader,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        scaler: torch.amp.GradScaler,
        epoch: int,
    ) -> tuple[float, int]:
        """One pass over this rank's share of the training set: its mean loss and the number of images."""
        self.model.train()
        if self.pretrained:
            freeze_batchnorm_statistics(self.model.backbone)
        # timm's Mixup draws from numpy's global generator: seeded per epoch, the same on every rank (one lambda a step)
        np.random.seed((self.cfg.seed, phase.number, epoch))
        total, count = 0.0, 0
        for images, targets in loader:
            images = images.to(self.device).contiguous(memory_format=torch.channels_last)
            targets = targets.to(self.device)
            with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                loss = self._loss(images, targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            total += loss.item() * len(targets)
            count += len(targets)
            self.reporter.step(loss.item())
        return total / max(count, 1), count

    def _loss(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.mixup is None:
            logits = self.forward(images)
            loss = self.criterion(logits, targets)
        else:
            if len(images) % 2:  # MixUp pairs the batch with its mirror: an odd last image sits this step out
                images, targets = images[:-1], targets[:-1]
            images, soft_targets = self.mixup(images, targets)
            logits = self.forward(images)
            loss = self.soft_criterion(logits, soft_targets)
        if self.teacher is None:
            return loss
        with torch.no_grad():
            soft = self.teacher(images)
        return (1 - self.cfg.distill) * loss + self.cfg.distill * distill_loss(logits, soft)

    def _restore(self) -> Progress:
        from sperm_edge.model.checkpoint import load_checkpoint

        if not (self.out / "last.json").is_file():
            raise SpermEdgeError(f"nothing to resume in {self.out}: no last.json (was the run started there?)")
        last = load_checkpoint(self.out / "last")
        self.model.load_state_dict(last.state_dict)
        if self.ema is not None:
            self.ema.load_state_dict(load_checkpoint(self.out / "last-ema").state_dict)
        progress = Progress(**last.meta["progress"])
        log.info("resuming %s at phase %d after epoch %d", self.out, progress.phase, progress.epoch)
        return progress

    def _finish(self, progress: Progress) -> dict:
        """The main process scores the candidates and writes the run's files; the others wait and return {}."""
        test = self._write_run(progress) if self.world.main else {}
        barrier(self.world)
        return test

    def _write_run(self, progress: Progress) -> dict:
        from sperm_edge.model.checkpoint import load_checkpoint

        for name, model in self._tracked().items():
            save_checkpoint(self.out / CANDIDATES / f"{name}-last", model, self._meta(progress))
        candidates = self._score_candidates()
        kept = f"{self._selected}-{self.cfg.keep}"
        best = load_checkpoint(self.out / CANDIDATES / kept)
        self.model.load_state_dict(best.state_dict)
        val = _predict(self.model, self._loader(self.val_set, train=False), self.device)
        logits, labels = _predict(self.model, self._loader(self.test_set, train=False), self.device)
        test = classification_report(labels, softmax(logits), self.dataset.classes)
        calibration = fit_and_report(val, (logits, labels), self.out)  # T from validation only
        test["temperature"], test["ece_calibrated"] = calibration["temperature"], calibration["ece_calibrated"]
        test["kept"] = kept
        test["best_epoch"] = progress.best_epoch if self.cfg.keep == "best" else len(progress.history)
        test["candidates"] = candidates
        test["train_seconds"] = round(progress.seconds, 1)
        test["train_device"] = _device_name(self.device)
        meta = best.meta
        meta["metrics"]["test"] = test
        meta["temperature"] = calibration["temperature"]
        save_checkpoint(self.out / "best", self.model, meta)
        atomic_write_json(self.out / "metrics.json", test)
        atomic_write_json(self.out / "history.json", progress.history)
        atomic_write_json(self.out / "split.json", meta["split"])
        plot_curves(progress.history, self.out / "curves.png")
        plot_confusion(np.array(test["confusion_matrix"]), self.dataset.classes, self.out / "confusion.png")
        atomic_write_json(self.out / "skipped.json", self.dataset.skipped)
        return test

    def _score_candidates(self) -> dict[str, dict]:
        """Accuracy and macro-F1 of every saved candidate on validation and test, plain and with TTA."""
        from sperm_edge.model.checkpoint import load_checkpoint

        loaders = {"val": self._loader(self.val_set, train=False), "test": self._loader(self.test_set, train=False)}
        scores = {}
        for meta_file in sorted((self.out / CANDIDATES).glob("*.json")):
            self.model.load_state_dict(load_checkpoint(meta_file.with_suffix("")).state_dict)
            scores[meta_file.stem] = {}
            for split, loader in loaders.items():
                for tta in (False, True):
                    logits, labels = _predict(self.model, loader, self.device, tta=tta)
                    report = classification_report(labels, softmax(logits), self.dataset.classes)
                    key = f"{split}_tta" if tta else split
                    scores[meta_file.stem][key] = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
        return scores
