"""Real images for export checks: calibration (unlabelled is fine), parity and the INT8 accuracy gate (labelled).

Sources are a checkpoint's own split (its meta records `split.data`, the absolute data root, and
`split.train` / `split.test` as paths relative to it) or a folder given by the user: class
sub-folders (checked against the model's classes) or, for calibration only, a flat folder of
images. Unreadable files are skipped and reported, never fatal, as long as something readable
remains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sperm_edge.data.folder import load_image_folder
from sperm_edge.errors import SpermEdgeError
from sperm_edge.preprocess import decode_image

log = logging.getLogger(__name__)


@dataclass
class ImageSet:
    """Decoded RGB uint8 images with optional labels (indices into the model's classes)."""

    source: str
    images: list[np.ndarray] = field(default_factory=list)
    labels: list[int] | None = None
    paths: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def sample(self, count: int, seed: int = 0) -> ImageSet:
        """At most `count` images, drawn without replacement in a reproducible order (all if fewer)."""
        if count <= 0 or len(self) <= count:
            return self
        picked = np.sort(np.random.default_rng(seed).choice(len(self), size=count, replace=False))
        return ImageSet(
            source=f"{self.source} (random {count} of {len(self)}, seed {seed})",
            images=[self.images[i] for i in picked],
            labels=[self.labels[i] for i in picked] if self.labels is not None else None,
            paths=[self.paths[i] for i in picked],
            skipped=self.skipped,
        )

    def describe(self) -> dict:
        """What the manifest records about the set: where it came from, how many, what was skipped."""
        return {"source": self.source, "n": len(self), "labelled": self.labelled, "skipped": self.skipped}


def _skip(skipped: list[dict], path: Path | str, reason: str) -> None:
    skipped.append({"file": str(path), "reason": reason})


def split_images(meta: dict, part: str, classes: list[str]) -> ImageSet:
    """The `part` ("train", "val", "test") of the split recorded in a checkpoint's meta, labelled by class folder."""
    split = meta.get("split") or {}
    root, names = split.get("data"), split.get(part)
    if not root or not names:
        raise SpermEdgeError(f"the checkpoint records no {part} split (its meta has no split.data / split.{part})")
    root_path = Path(root)
    if not root_path.is_dir():
        raise SpermEdgeError(f"the checkpoint's data folder {root_path} is not here (trained on another machine?)")
    index = {name: i for i, name in enumerate(classes)}
    result = ImageSet(source=f"{part} split of {root_path}", labels=[])
    for rel in names:
        path = root_path / rel
        label = index.get(Path(rel).parts[0])
        if label is None:
            _skip(result.skipped, path, f"class folder {Path(rel).parts[0]!r} is not one of the model's classes")
            continue
        try:
            image = decode_image(path)
        except SpermEdgeError as err:
            _skip(result.skipped, path, str(err))
            continue
        result.images.append(image)
        result.labels.append(label)
        result.paths.append(rel)
    _require_some(result, root_path)
    return result


def folder_images(path: str | Path, classes: list[str], need_labels: bool) -> ImageSet:
    """Images below `path`: class sub-folders named like the model's classes, or (unless `need_labels`) loose files.

    Class folders the model does not know are refused: they mean the data and the model disagree.
    """
    root = Path(path)
    if not root.exists():
        raise SpermEdgeError(f"image folder not found: {root}")
    if not root.is_dir():
        raise SpermEdgeError(f"not a folder: {root}")
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    if subdirs:
        folder = load_image_folder(root, classes=classes, min_classes=1)
        skipped = [{"file": p, "reason": reason} for p, reason in folder.skipped]
        result = ImageSet(
            source=str(root), images=folder.images, labels=folder.labels, paths=folder.relative_paths(), skipped=skipped
        )
        _require_some(result, root)
        return result
    if need_labels:
        raise SpermEdgeError(
            f"{root} has no class sub-folders; a labelled set needs one folder per class ({', '.join(classes)})"
        )
    result = ImageSet(source=str(root))
    for file in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            result.images.append(decode_image(file))
            result.paths.append(file.name)
        except SpermEdgeError as err:
            _skip(result.skipped, file, str(err))
    _require_some(result, root)
    return result


def _require_some(result: ImageSet, root: Path) -> None:
    if result.skipped:
        names = ", ".join(Path(s["file"]).name for s in result.skipped[:5])
        more = f" and {len(result.skipped) - 5} more" if len(result.skipped) > 5 else ""
        log.warning("skipped %d unreadable or unusable file(s) in %s: %s%s", len(result.skipped), root, names, more)
    if not result.images:
        raise SpermEdgeError(f"no readable image in {root} ({len(result.skipped)} file(s) skipped)")
