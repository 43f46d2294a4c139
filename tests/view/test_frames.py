from __future__ import annotations

import threading
import time

import numpy as np

from sperm_edge.runtime.pipeline import CellResult
from sperm_edge.view.frames import FrameSlot, JpegFrames


def _image(level: int) -> np.ndarray:
    return np.full((120, 160, 3), level, np.uint8)


def test_slot_keeps_only_the_newest_frame() -> None:
    slot = FrameSlot()
    assert slot.newer_than(0, timeout=0.01) is None
    for level in (10, 20, 30):
        slot.put(_image(level), [], 5.0)
    frame = slot.newer_than(0, timeout=0.01)
    assert frame.version == 3 and int(frame.image[0, 0, 0]) == 30  # the older two were replaced
    assert slot.newer_than(3, timeout=0.01) is None


def test_a_waiting_reader_wakes_on_put_and_on_close() -> None:
    slot = FrameSlot()
    timer = threading.Timer(0.05, slot.put, args=(_image(1), [], 1.0))
    timer.start()
    start = time.monotonic()
    assert slot.newer_than(0, timeout=5.0).version == 1 and time.monotonic() - start < 2.0
    threading.Timer(0.05, slot.close).start()
    start = time.monotonic()
    assert slot.newer_than(1, timeout=5.0) is None and slot.closed and time.monotonic() - start < 2.0


def test_jpegs_are_encoded_once_per_frame_for_any_number_of_readers() -> None:
    slot = FrameSlot()
    frames = JpegFrames(slot, min_interval=0.0)
    cells = [CellResult((10, 10, 40, 40), "02_Tapered", 0.4, 7, True)]
    slot.put(_image(128), cells, 9.5)
    assert frames.encoded == 0  # nothing is encoded until someone reads
    first, second = frames.next_after(0, 0.01), frames.next_after(0, 0.01)
    assert first == second and frames.encoded == 1
    version, jpeg = first
    assert version == 1 and jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    slot.put(_image(64), cells, 9.5)
    assert frames.next_after(1, 0.01)[0] == 2 and frames.encoded == 2


def test_encoding_rate_is_capped_across_readers() -> None:
    slot = FrameSlot()
    frames = JpegFrames(slot, min_interval=10.0)
    slot.put(_image(1), [], 1.0)
    assert frames.next_after(0, 0.01)[0] == 1
    slot.put(_image(2), [], 1.0)
    # a reader that has not seen frame 1 gets it (cached) rather than a fresh encoding within the interval
    assert frames.next_after(0, 0.01)[0] == 1 and frames.encoded == 1
    # a reader that has seen it gets the new frame
    assert frames.next_after(1, 0.01)[0] == 2 and frames.encoded == 2
