"""Few-shot lab adaptation: fit a trained model to another lab's stain and optics from K crops per class.

The backbone stays frozen (K crops cannot retrain 3.6M weights), all but its last block stage by
default (`stages`: how many are trained; 0 freezes it all). CBAM, the linear head and that tail are
fitted to the new lab's class folders (a new head when its classes differ from the model's),
BatchNorm statistics kept as trained. The frozen part's feature maps are computed once, for `views`
augmented copies of every shot (rotations, flips, stain jitter), and the part on top trains on them in
a fixed schedule chosen beforehand: nothing is selected on the new lab's test crops
(`benchmarks/crosslab.py --select` chose it on a share of SMIDS that the cross-lab rows never test on).

The temperature is refitted by cross-fitting: the head is trained on one half of the shots and
scored on the other, both ways, and T is fitted on those out-of-fold logits (scoring the shots a
head trained on would make it look overconfident). The result is an ordinary run folder
(`best.*`, `metrics.json` on the rest of the new lab's crops) that `sperm-edge export` takes, and its
metadata records what it was adapted from.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sperm_edge.calibration import fit_temperature
from sperm_edge.data.augment import AugmentConfig
from sperm_edge.data.folder import ImageFolder, load_image_folder
from sperm_edge.data.presets import abnormal_classes, detect_preset
from sperm_edge.data.splits import group_ids
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_json
from sperm_edge.metrics import classification_report, softmax
from sperm_edge.model.architectures import freeze_batchnorm_statistics, has_block_stages, split_backbone
from sperm_edge.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sperm_edge.train.config import AdaptConfig
from sperm_edge.train.dataset import TensorImages

log = logging.getLogger(__name__)


def sample_shots(
    dataset: ImageFolder, per_class: int, seed: int, among: np.ndarray | None = None
) -> tuple[list[int], list[int]]:
    """K random crops per class for adaptation (from the `among` mask's crops, if given), and the rest of the
    data set for testing; pixel twins never straddle the two."""
    labels = np.asarray(dataset.labels)
    groups = group_ids(dataset.pixel_hashes)
    rng = np.random.default_rng(seed)
    shots: list[int] = []
    for label in range(len(dataset.classes)):
        members = np.flatnonzero((labels == label) & (True if among is None else among))
        if len(members) <= per_class:
            raise SpermEdgeError(
                f"class {dataset.classes[label]!r} of {dataset.root} has {len(members)} images; "
                f"--per-class {per_class} needs more (some must remain to test on)"
            )
        shots += rng.choice(members, size=per_class, replace=False).tolist()
    taken = set(groups[shots].tolist())
    rest = [i for i in range(len(dataset)) if groups[i] not in taken]
    return sorted(shots), rest


def _features(
    front: nn.Module, plain: TensorImages, augmented: TensorImages, views: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-part feature maps of the shots as they are (view 0) and of `views - 1` augmented passes, with labels."""
    maps, labels = [], []
    with torch.inference_mode():
        for view in range(views):
            images = plain if view == 0 else augmented
            images.epoch = view  # each augmented pass draws fresh transforms
            maps.append(front(torch.stack([images[i][0] for i in range(len(images))])))
            labels.append(images.labels)
    return torch.cat(maps), torch.cat(labels)


def _steps(n: int, cfg: AdaptConfig):
    """Row indices of each step: all `n` rows, or shuffled mini-batches of `cfg.batch_size` (seeded)."""
    if cfg.batch_size <= 0 or cfg.batch_size >= n:
        yield from (slice(None) for _ in range(cfg.steps))
        return
    generator, order = torch.Generator().manual_seed(cfg.seed), torch.empty(0, dtype=torch.long)
    for _ in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        yield order[: cfg.batch_size]
        order = order[cfg.batch_size :]


def _fit_top(top: nn.Sequential, maps: torch.Tensor, labels: torch.Tensor, cfg: AdaptConfig) -> nn.Sequential:
    """Train tail + CBAM + head (a fresh copy of `top`) on cached maps, class-balanced, in the fixed schedule."""
    top = copy.deepcopy(top).train()
    freeze_batchnorm_statistics(top[0])
    counts = torch.bincount(labels, minlength=top[-1][-1].out_features).clamp(min=1).float()
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (len(counts) * counts))
    groups = [{"params": [*top[1].parameters(), *top[2].parameters()], "lr": cfg.lr}]
    tail = list(top[0].parameters())
    if tail:
        groups.append({"params": tail, "lr": cfg.backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    for rows in _steps(len(labels), cfg):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(top(maps[rows]), labels[rows]).backward()
        optimizer.step()
    return top.eval()


def _top(model: nn.Module, tail: nn.Module, num_classes: int) -> nn.Sequential:
    """Copies of the backbone's `tail`, CBAM and head of `model`, the head replaced by a fresh linear layer when
    the class count differs."""
    head = copy.deepcopy(model.head)
    linear = head[-1]
    if linear.out_features != num_classes:
        head[-1] = nn.Linear(linear.in_features, num_classes)
    return nn.Sequential(copy.deepcopy(tail), copy.deepcopy(model.attention), head)


def _source(path: str | Path) -> Path:
    """The checkpoint of a run folder, a checkpoint file, or a bundle's retained checkpoint."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        from sperm_edge.bundle import load_bundle

        return load_bundle(path).checkpoint_stem()
    return path


def adapted_stages(cfg: AdaptConfig, backbone: nn.Module) -> int:
    """The block stages `cfg` trains on `backbone`: those it names, by default the last one where it has stages."""
    if cfg.stages is not None:
        return cfg.stages
    return 1 if has_block_stages(backbone) else 0


def adapt(source: str | Path, data: str | Path, out: str | Path, cfg: AdaptConfig) -> dict:
    """Adapt the model of `source` (run, checkpoint or bundle) to the lab of `data`; write a run folder at `out`.

    Returns the test metrics on the new lab's crops that were not used to adapt.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SpermEdgeError(f"run folder {out} already exists; choose another --out")
    if cfg.per_class < 2:
        raise SpermEdgeError(f"--per-class must be at least 2 (the temperature is cross-fitted), not {cfg.per_class}")
    stem = _source(source)
    ckpt: Checkpoint = load_checkpoint(stem)
    dataset = load_image_folder(data, min_classes=2)
    shots, rest = sample_shots(dataset, cfg.per_class, cfg.seed)
    model, temperature = adapt_model(ckpt, dataset, shots, cfg)
    cfg = replace(cfg, stages=adapted_stages(cfg, model.backbone))  # what the run's metadata records
    test_set = TensorImages([dataset.images[i] for i in rest], [dataset.labels[i] for i in rest], ckpt.card.preprocess)
    test = _score(model, test_set, dataset.classes)
    test["temperature"] = temperature
    _write_run(out, model, ckpt, stem, dataset, shots, rest, cfg, temperature, test)
    return test


def adapt_model(ckpt: Checkpoint, dataset: ImageFolder, shots: list[int], cfg: AdaptConfig) -> tuple[nn.Module, float]:
    """The checkpoint's model with CBAM and head (and `cfg.stages` of the backbone) fitted to `dataset`'s classes
    on the `shots`, and its temperature."""
    model = ckpt.build_model().eval()
    cfg = replace(cfg, stages=adapted_stages(cfg, model.backbone))
    try:
        front, tail = split_backbone(model.backbone, cfg.stages)
    except ValueError as err:
        raise SpermEdgeError(f"--stages {cfg.stages}: {err}") from None
    torch.manual_seed(cfg.seed)
    top = _top(model, tail, len(dataset.classes))
    images, labels = [dataset.images[i] for i in shots], [dataset.labels[i] for i in shots]
    plain = TensorImages(images, labels, ckpt.card.preprocess)
    augmented = TensorImages(images, labels, ckpt.card.preprocess, AugmentConfig(), cfg.seed)
    maps, labels = _features(front, plain, augmented, cfg.views)
    temperature = _cross_fitted_temperature(top, maps, labels, len(shots), cfg)
    fitted = _fit_top(top, maps, labels, cfg)
    tail.load_state_dict(fitted[0].state_dict())  # the backbone's own tail modules take the fitted weights
    model.attention, model.head = fitted[1], fitted[2]
    return model.eval(), temperature


def _cross_fitted_temperature(top: nn.Module, maps: torch.Tensor, labels: torch.Tensor, n: int, cfg) -> float:
    """T fitted on out-of-fold logits: heads trained on one half of the shots score the other half (view 0)."""
    shot_labels = labels[:n]
    rng = np.random.default_rng(cfg.seed + 1)
    halves = np.zeros(n, dtype=bool)
    for label in torch.unique(shot_labels).tolist():  # each half holds about half of every class
        members = np.flatnonzero(shot_labels.numpy() == label)
        halves[rng.permutation(members)[: len(members) // 2]] = True
    view_of = np.arange(len(labels)) % n  # feature rows are view-major: row r is shot r % n
    logits, truth = [], []
    for half in (halves, ~halves):
        train_rows = torch.as_tensor(~half[view_of])
        head = _fit_top(top, maps[train_rows], labels[train_rows], cfg)
        with torch.inference_mode():
            held = torch.as_tensor(np.flatnonzero(half))  # view 0 of the held-out shots
            logits.append(head(maps[held]).numpy())
            truth.append(shot_labels[held].numpy())
    return fit_temperature(np.concatenate(logits), np.concatenate(truth))


def _score(model: nn.Module, images: TensorImages, classes: list[str]) -> dict:
    with torch.inference_mode():
        logits = torch.cat(
            [model(torch.stack([images[i][0] for i in range(s, min(s + 64, len(images)))]))
             for s in range(0, len(images), 64)]
        ).numpy()  # fmt: skip
    return classification_report(images.labels.numpy(), softmax(logits), classes)


def _write_run(out, model, ckpt, stem, dataset, shots, rest, cfg, temperature, test) -> None:
    preset = detect_preset(dataset.classes)
    paths = dataset.relative_paths()
    meta = dict(ckpt.meta)
    meta.update(
        classes=dataset.classes,
        normal_class=preset.normal_class,
        abnormal_classes=abnormal_classes(dataset.classes, preset.normal_class),
        preset=preset.name,
        temperature=temperature,
        metrics={"test": test},
        # the shots trained and (cross-fitted) calibrated it; no separate validation split exists
        split={
            "seed": cfg.seed,
            "data": str(dataset.root.resolve()),
            "train": [paths[i] for i in shots],
            "val": [],
            "test": [paths[i] for i in rest],
        },  # fmt: skip
        adapted_from={
            "checkpoint": str(stem.resolve()),
            "weights_sha256": ckpt.meta.get("weights_sha256"),
            "classes": ckpt.card.classes,
            "data": ckpt.meta.get("split", {}).get("data"),
            "config": asdict(cfg),
            "trained": f"the backbone's last {cfg.stages} stages, CBAM and head on the frozen part's features"
            if cfg.stages
            else "CBAM and head on frozen backbone features",
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "best", model, meta)
    atomic_write_json(out / "metrics.json", test)
    atomic_write_json(out / "split.json", meta["split"])
    log.info("adapted %s to %s: test accuracy %.3f on %d crops", stem, dataset.root, test["accuracy"], test["n"])
