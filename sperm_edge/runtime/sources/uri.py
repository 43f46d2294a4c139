"""One string picks the source, as in jetson-inference and Ultralytics.

0, 1, ...                  camera by index (V4L2 on Linux)
/dev/video0, v4l2:///dev/video0
csi://0                    Jetson CSI camera through GStreamer (nvarguscamerasrc)
rtsp://..., rtsps://..., rtmp://..., http(s)://...   network stream
gst://PIPELINE or a string with " ! "               a GStreamer pipeline ending in appsink
pylon://, pylon://SERIAL?exposure_us=2000&gain_db=3   a Basler camera through pypylon (`sources.pylon`)
mmcore://demo, mmcore://path/config.cfg?...          a camera through Micro-Manager (`sources.mmcore`)
clip.mp4, file://clip.mp4  video file
cell.png                   one image
folder/                    every image below the folder, in natural order
'smear/*.png'              a glob (quote it in the shell)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import IMAGE_SUFFIXES

LIVE_SCHEMES = frozenset({"device", "v4l2", "csi", "rtsp", "rtmp", "http", "gst", "pylon", "mmcore"})
CAMERA_SCHEMES = frozenset({"pylon", "mmcore"})
_NETWORK = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")


@dataclass(frozen=True)
class SourceURI:
    """A parsed source: `scheme` in device, v4l2, csi, rtsp, rtmp, http, gst, pylon, mmcore, video, image, folder,
    glob. `query` holds a camera SDK source's options (after `?`)."""

    scheme: str
    location: str
    raw: str
    query: str = ""

    @property
    def live(self) -> bool:
        return self.scheme in LIVE_SCHEMES

    @property
    def index(self) -> int:
        """The device or sensor number of a device/csi URI."""
        return int(self.location)


def parse_uri(uri: str | Path) -> SourceURI:
    """Parse a source string; a path that does not exist fails with a message naming it."""
    raw = str(uri).strip()
    if not raw:
        raise SpermEdgeError("empty --source")
    if raw.isdigit():
        return SourceURI("device", raw, raw)
    lower = raw.lower()
    if lower.startswith("csi://"):
        sensor = raw[6:]
        if not sensor.isdigit():
            raise SpermEdgeError(f"csi source needs a sensor number, e.g. csi://0 (got {raw!r})")
        return SourceURI("csi", sensor, raw)
    if lower.startswith("v4l2://"):
        return _v4l2(raw[7:], raw)
    if re.fullmatch(r"/dev/video\d+", raw):
        return _v4l2(raw, raw)
    if lower.startswith(_NETWORK):
        scheme = lower.split("://", 1)[0].rstrip("s")
        return SourceURI("http" if scheme == "http" else scheme, raw, raw)
    for scheme in CAMERA_SCHEMES:
        if lower.startswith(f"{scheme}://"):
            location, _, query = raw[len(scheme) + 3 :].partition("?")
            if scheme == "mmcore" and not location:
                raise SpermEdgeError(
                    f"mmcore source needs a configuration file or demo, e.g. mmcore://demo (got {raw!r})"
                )
            return SourceURI(scheme, location, raw, query)
    if lower.startswith("gst://"):
        return SourceURI("gst", raw[6:], raw)
    if " ! " in raw:
        return SourceURI("gst", raw, raw)
    if lower.startswith("file://"):
        raw_path = raw[7:]
    else:
        raw_path = raw
    if any(ch in raw_path for ch in "*?["):
        return SourceURI("glob", raw_path, raw)
    path = Path(raw_path).expanduser()
    if path.is_dir():
        return SourceURI("folder", str(path), raw)
    if not path.exists():
        raise SpermEdgeError(f"source not found: {raw_path} (not a file, folder, glob, camera index or stream URL)")
    kind = "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"
    return SourceURI(kind, str(path), raw)


def _v4l2(device: str, raw: str) -> SourceURI:
    match = re.fullmatch(r"/dev/video(\d+)", device)
    if not match:
        raise SpermEdgeError(f"not a V4L2 device path: {device!r} (expected /dev/videoN)")
    return SourceURI("v4l2", match.group(1), raw)


def csi_pipeline(sensor: int, width: int | None, height: int | None, fps: float | None) -> str:
    """The GStreamer pipeline for a Jetson CSI camera, delivering BGR to OpenCV's appsink (newest frame only)."""
    w, h, rate = width or 1280, height or 720, int(round(fps or 30))
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! "
        f"video/x-raw(memory:NVMM), width=(int){w}, height=(int){h}, framerate=(fraction){rate}/1 ! "
        "nvvidconv ! video/x-raw, format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )
