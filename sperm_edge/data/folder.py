"""Class-folder data sets (one sub-folder per class), read by content, corrupt files skipped and reported."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sperm_edge.data.presets import Preset, detect_preset
from sperm_edge.errors import SpermEdgeError
from sperm_edge.preprocess import decode_image

log = logging.getLogger(__name__)


@dataclass
class ImageFolder:
    """Decoded images of a class-folder data set, in a stable order (class, then file name)."""

    root: Path
    classes: list[str]
    preset: Preset
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    pixel_hashes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def relative_paths(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.paths]

    def subset(self, indices: np.ndarray | list[int]) -> ImageFolder:
        picked = ImageFolder(self.root, self.classes, self.preset, skipped=self.skipped)
        for i in indices:
            picked.paths.append(self.paths[i])
            picked.labels.append(self.labels[i])
            picked.images.append(self.images[i])
            picked.pixel_hashes.append(self.pixel_hashes[i])
        return picked


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def pixel_hash(image: np.ndarray) -> str:
    """Identity of an image's pixels (shape included), whatever its file encoding."""
    digest = hashlib.sha1(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def load_image_folder(root: str | Path, classes: list[str] | None = None, min_classes: int = 2) -> ImageFolder:
    """Decode every image below `root`'s class folders.

    Class order: the preset's when the folder names match one, else `classes` when given, else
    sorted. Unreadable files are skipped, counted in one warning and kept in `skipped`.
    """
    root = Path(root)
    if not root.exists():
        raise SpermEdgeError(f"data folder not found: {root}")
    if not root.is_dir():
        raise SpermEdgeError(f"data path is not a folder: {root}")
    found = {d.name: d for d in _class_dirs(root)}
    if not found:
        raise SpermEdgeError(f"data folder {root} has no class sub-folders (expected one folder per class)")
    preset = detect_preset(list(found))
    if classes is not None:
        missing = sorted(set(found) - set(classes))
        if missing:
            raise SpermEdgeError(f"data folder {root} has classes {missing} that the model does not know ({classes})")
        order = list(classes)
    else:
        order = list(preset.classes) if preset.classes else sorted(found)
    if len(found) < min_classes:
        raise SpermEdgeError(f"data folder {root} has only {len(found)} class folder(s); need at least {min_classes}")
    dataset = ImageFolder(root, order, preset)
    for label, name in enumerate(order):
        if name not in found:
            continue
        readable = 0
        for path in sorted(p for p in found[name].iterdir() if p.is_file() and not p.name.startswith(".")):
            try:
                image = decode_image(path)
            except SpermEdgeError as err:
                dataset.skipped.append((str(path), str(err)))
                continue
            dataset.paths.append(path)
            dataset.labels.append(label)
            dataset.images.append(image)
            dataset.pixel_hashes.append(pixel_hash(image))
            readable += 1
        if readable == 0:
            raise SpermEdgeError(f"class folder {found[name]} has no readable image")
    if dataset.skipped:
        listing = "; ".join(Path(p).name for p, _ in dataset.skipped[:10])
        more = f" and {len(dataset.skipped) - 10} more" if len(dataset.skipped) > 10 else ""
        log.warning("skipped %d unreadable file(s) in %s: %s%s", len(dataset.skipped), root, listing, more)
    return dataset
