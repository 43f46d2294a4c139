"""Sources of still images: one file, every image below a folder, or a glob; one frame per image."""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import numpy as np

from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import IMAGE_SUFFIXES, natural_key
from sperm_edge.preprocess import decode_image
from sperm_edge.runtime.sources.base import SourceOptions, VideoSource
from sperm_edge.runtime.sources.uri import SourceURI

log = logging.getLogger(__name__)


def list_images(uri: SourceURI) -> list[Path]:
    """The image files a still-image URI names, in natural order; none at all is an error.

    A folder is searched recursively, skipping entries whose names start with `_` or `.` (as the
    class-folder readers do: `_masks/` beside a synthetic set is not a set of cells).
    """
    if uri.scheme == "image":
        return [Path(uri.location)]
    if uri.scheme == "folder":
        root = Path(uri.location)
        paths = [
            p for p in root.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
        ]  # fmt: skip
    else:
        paths = [Path(p) for p in glob.glob(uri.location, recursive=True) if Path(p).is_file()]
    if not paths:
        raise SpermEdgeError(f"no images found for source {uri.raw}")
    unique: dict[Path, Path] = {}
    for path in sorted(paths, key=natural_key):  # one image reached twice (a link, a symlink loop) counts once
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


class ImageSource(VideoSource):
    """Decodes each image on demand (by content, not extension); unreadable files are skipped and counted."""

    raw_is_bgr = False  # decode_image already returns RGB

    def __init__(self, uri: SourceURI, options: SourceOptions | None = None) -> None:
        super().__init__(uri.raw, options)
        self.options.live = False
        self.options.latest_only = False
        self.parsed = uri
        self.paths: list[Path] = []
        self._next = 0
        self._root = Path(uri.location) if uri.scheme == "folder" else None

    def __len__(self) -> int:
        return len(self.paths)

    def _open_impl(self) -> None:
        self.paths = list_images(self.parsed)
        self._next = 0

    def _close_impl(self) -> None:
        self.paths = []

    def _read_impl(self) -> tuple[np.ndarray, str] | None:
        failed_in_a_row = 0
        while self._next < len(self.paths) or (self.options.loop and self.paths):
            if self._stop.is_set():
                return None
            if self._next >= len(self.paths):
                self._next = 0
            path = self.paths[self._next]
            self._next += 1
            try:
                image = decode_image(path)
            except SpermEdgeError as err:
                self.stats.skipped += 1
                failed_in_a_row += 1
                log.warning("skipped: %s", err)
                if self.options.loop and failed_in_a_row >= len(self.paths):
                    raise SpermEdgeError(
                        f"none of the {len(self.paths)} images of {self.uri} can be decoded: nothing to loop over"
                    ) from err
                continue
            name = str(path.relative_to(self._root)) if self._root else path.name
            return image, name
        return None
