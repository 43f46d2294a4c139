from __future__ import annotations

import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from sperm_edge.errors import SpermEdgeError
from sperm_edge.runtime.sources import CaptureSource, SourceOptions, open_capture, open_source, parse_uri
from tests.runtime.conftest import frame_number


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        ("0", "device"),
        ("/dev/video3", "v4l2"),
        ("v4l2:///dev/video1", "v4l2"),
        ("csi://0", "csi"),
        ("rtsp://cam.local:554/stream", "rtsp"),
        ("https://host/live.m3u8", "http"),
        ("smear/*.png", "glob"),
        ("videotestsrc ! videoconvert ! appsink", "gst"),
    ],
)
def test_uri_schemes(uri: str, scheme: str) -> None:
    parsed = parse_uri(uri)
    assert parsed.scheme == scheme
    assert parsed.live == (scheme not in ("glob",))


def test_paths_are_told_apart_by_what_they_are(tmp_path: Path, numbered_video: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert parse_uri(tmp_path).scheme == "folder"
    assert parse_uri(tmp_path / "a.png").scheme == "image"
    assert parse_uri(numbered_video).scheme == "video"
    assert parse_uri(f"file://{numbered_video}").scheme == "video"
    with pytest.raises(SpermEdgeError, match="source not found: .*missing.mp4"):
        parse_uri(tmp_path / "missing.mp4")
    with pytest.raises(SpermEdgeError, match="csi source needs a sensor number"):
        parse_uri("csi://left")


def test_video_file_delivers_every_frame_in_order_then_ends(numbered_video: Path) -> None:
    with open_source(numbered_video) as source:
        assert not source.live and not source.options.latest_only
        numbers = [frame_number(f.image) for f in source]
        assert [f for f in range(20)] == numbers
    assert source.stats.delivered == 20 and source.stats.reopens == 0 and source.stats.error is None


def test_folder_and_glob_sources_skip_what_they_cannot_read(tmp_path: Path) -> None:
    for i in (2, 10, 1):
        cv2.imwrite(str(tmp_path / f"cell {i}.png"), np.full((12, 10), 20 * i, np.uint8))  # grey
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((6, 6, 4), 1000, np.uint16))  # 16-bit BGRA
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    with open_source(tmp_path) as source:
        frames = list(source)
    assert [f.name for f in frames] == ["cell 1.png", "cell 2.png", "cell 10.png", "deep.png"]
    assert all(f.image.dtype == np.uint8 and f.image.shape[2] == 3 for f in frames)
    assert source.stats.skipped == 1
    with open_source(str(tmp_path / "cell *.png")) as source:
        assert len(list(source)) == 3
    with pytest.raises(SpermEdgeError, match="no images found"):
        with open_source(str(tmp_path / "*.jpg")):
            pass


def test_a_camera_index_that_does_not_exist_fails_clearly() -> None:
    with pytest.raises(SpermEdgeError, match="cannot open camera 57: no such device"):
        with open_source("57"):
            pass


def test_csi_without_gstreamer_says_what_is_missing() -> None:
    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer: csi:// would try a real camera")
    with pytest.raises(SpermEdgeError, match="needs OpenCV built with GStreamer"):
        with open_source("csi://0"):
            pass


class FailingAfter:
    """A real cv2.VideoCapture whose read() starts failing after `n` frames, like a camera cable pulled."""

    def __init__(self, path: Path, n: int) -> None:
        self.cap = cv2.VideoCapture(str(path))
        self.n = n

    def read(self):
        if self.n <= 0:
            return False, None
        self.n -= 1
        return self.cap.read()

    def __getattr__(self, name: str):
        return getattr(self.cap, name)


def _flaky_opener(fail_after: int):
    opened = []

    def opener(uri, options):
        opened.append(uri)
        return FailingAfter(Path(uri.location), fail_after) if len(opened) == 1 else open_capture(uri, options)

    return opener, opened


def test_a_file_that_fails_mid_stream_is_reopened_where_it_stopped(numbered_video: Path) -> None:
    opener, opened = _flaky_opener(fail_after=7)
    options = SourceOptions(backoff=0.01)
    with CaptureSource(parse_uri(numbered_video), options, opener=opener) as source:
        numbers = [frame_number(f.image) for f in source]
    assert numbers == list(range(20))
    assert len(opened) == 2 and source.stats.reopens == 1
    assert source.stats.gaps[0].after_frame == 7 and "read failed at frame 7" in source.stats.gaps[0].reason


def test_a_live_source_that_drops_is_reopened_with_backoff(numbered_video: Path) -> None:
    opener, opened = _flaky_opener(fail_after=5)
    options = SourceOptions(live=True, latest_only=False, backoff=0.01)
    with CaptureSource(parse_uri(numbered_video), options, opener=opener) as source:
        numbers = [frame_number(f.image) for f in itertools.islice(source, 9)]
    assert numbers == [0, 1, 2, 3, 4, 0, 1, 2, 3]  # a reopened camera shows what it sees now
    assert source.stats.reopens == 1 and source.stats.gaps[0].seconds >= 0.01


def test_a_live_source_that_stays_down_ends_with_an_error(numbered_video: Path) -> None:
    calls = []

    def opener(uri, options):
        calls.append(1)
        if len(calls) > 1:
            raise SpermEdgeError("camera gone")
        return FailingAfter(Path(uri.location), 2)

    options = SourceOptions(live=True, latest_only=False, backoff=0.01, reopen_attempts=3)
    with CaptureSource(parse_uri(numbered_video), options, opener=opener) as source:
        assert len(list(source)) == 2
    assert "gave up after 3 reopen attempts" in source.stats.error and len(calls) == 4


def test_latest_only_drops_stale_frames_instead_of_lagging(numbered_video: Path) -> None:
    options = SourceOptions(live=True, backoff=0.01)  # live: newest frame only, by default
    with CaptureSource(parse_uri(numbered_video), options) as source:
        assert source.options.latest_only
        for _frame in itertools.islice(source, 3):
            time.sleep(0.05)  # a slow consumer: the grabber keeps reading, overwriting what was not taken
    assert source.stats.dropped > 0 and source.stats.delivered == 3


class Frames:
    """A capture device that returns fixed frames: grey, 16-bit, BGRA and one that cannot be shown."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = list(frames)

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def isOpened(self) -> bool:  # noqa: N802
        return True

    def get(self, prop: int) -> float:
        return float(len(self.frames)) if prop == cv2.CAP_PROP_FRAME_COUNT else 0.0

    def set(self, prop: int, value: float) -> bool:
        return True

    def release(self) -> None:
        pass


def test_frames_of_other_depth_or_channels_are_converted_or_skipped(numbered_video: Path) -> None:
    raw = [
        np.full((4, 5), 7, np.uint8),  # grey
        np.full((4, 5), 0x8000, np.uint16),  # 16-bit grey
        np.dstack([np.full((4, 5), v, np.uint8) for v in (10, 20, 30, 255)]),  # BGRA
        np.zeros((4, 5, 2), np.uint8),  # two channels: not an image we can show
    ]
    source = CaptureSource(parse_uri(numbered_video), SourceOptions(), opener=lambda u, o: Frames(raw))
    with source:
        frames = [f.image for f in source]
    assert len(frames) == 3 and source.stats.skipped == 1
    assert frames[0][0, 0].tolist() == [7, 7, 7]
    assert frames[1][0, 0].tolist() == [128, 128, 128]
    assert frames[2][0, 0].tolist() == [30, 20, 10]  # BGR(A) -> RGB


def test_a_glob_through_a_symlink_loop_lists_each_image_once(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from sperm_edge.runtime.sources.images import list_images

    cv2.imwrite(str(tmp_path / "cell.png"), np.full((20, 20, 3), 90, np.uint8))
    (tmp_path / "again").symlink_to(tmp_path, target_is_directory=True)  # a loop: again/again/... is tmp_path
    images = list_images(parse_uri(f"{tmp_path}/**/*.png"))
    assert [p.name for p in images] == ["cell.png"]


def test_looping_over_a_folder_where_nothing_decodes_stops_with_an_error(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"broken{i}.png").write_bytes(b"not an image")
    with open_source(tmp_path, SourceOptions(loop=True)) as source:
        with pytest.raises(SpermEdgeError, match="none of the 3 images .* can be decoded"):
            next(iter(source))
