"""Frame sources by URI: cameras, CSI, SDK cameras (pylon, Micro-Manager), network streams, video files, images,
folders and globs.

with open_source("clip.mp4") as source:
    for frame in source:      # Frame: index, RGB uint8 image, timestamp
        ...
"""

from __future__ import annotations

from pathlib import Path

from sperm_edge.runtime.sources._handle import Capture
from sperm_edge.runtime.sources.base import Frame, Gap, SourceOptions, SourceStats, VideoSource
from sperm_edge.runtime.sources.capture import CaptureSource, Opener, open_capture
from sperm_edge.runtime.sources.images import ImageSource, list_images
from sperm_edge.runtime.sources.sdk import CameraOpener
from sperm_edge.runtime.sources.uri import CAMERA_SCHEMES, SourceURI, csi_pipeline, parse_uri

__all__ = [
    "Capture",
    "CaptureSource",
    "Frame",
    "Gap",
    "ImageSource",
    "Opener",
    "SourceOptions",
    "SourceStats",
    "SourceURI",
    "VideoSource",
    "csi_pipeline",
    "list_images",
    "open_capture",
    "open_source",
    "parse_uri",
]


def open_source(uri: str | Path, options: SourceOptions | None = None) -> VideoSource:
    """The source for `uri` (not yet opened: use it in a `with` block)."""
    parsed = parse_uri(uri)
    if parsed.scheme in ("image", "folder", "glob"):
        return ImageSource(parsed, options)
    if parsed.scheme in CAMERA_SCHEMES:
        return CaptureSource(parsed, options, opener=CameraOpener(parsed))
    return CaptureSource(parsed, options)
