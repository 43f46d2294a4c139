from __future__ import annotations

import cv2
import numpy as np
import pytest

from sperm_edge.errors import SpermEdgeError
from sperm_edge.preprocess import PreprocessSpec, decode_image, pad_to_square, preprocess_batch, to_rgb8

SPEC = PreprocessSpec(img_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def test_non_square_images_are_padded_with_their_border_then_resized() -> None:
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :, 0] = 200
    square = pad_to_square(image)
    assert square.shape == (40, 40, 3)
    assert (square[..., 0] == 200).all()
    batch = preprocess_batch([image, np.zeros((50, 30, 3), np.uint8)], SPEC)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    assert np.allclose(batch[0, 0], (200 / 255 - 0.5) / 0.5, atol=1e-5)
    assert np.allclose(batch[1], -1.0)


def test_decode_by_content_not_extension(tmp_path) -> None:
    image = np.full((8, 9, 3), (10, 20, 30), np.uint8)  # BGR
    ok, png = cv2.imencode(".png", image)
    path = tmp_path / "really a png.bmp"
    path.write_bytes(png.tobytes())
    rgb = decode_image(path)
    assert rgb.shape == (8, 9, 3) and tuple(rgb[0, 0]) == (30, 20, 10)


def test_corrupt_and_missing_images_raise_with_the_path(tmp_path) -> None:
    bad = tmp_path / "bad.bmp"
    bad.write_bytes(b"BM garbage")
    with pytest.raises(SpermEdgeError, match="bad.bmp"):
        decode_image(bad)
    with pytest.raises(SpermEdgeError, match="cannot read image"):
        decode_image(tmp_path / "missing.png")


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 1), np.uint8),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4, 3), np.uint16),
    ],
)
def test_grey_alpha_and_16_bit_frames_become_rgb8(frame: np.ndarray) -> None:
    out = to_rgb8(frame)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8


def test_spec_round_trips_through_a_dict() -> None:
    assert PreprocessSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(SpermEdgeError, match="unknown resize rule"):
        PreprocessSpec(32, (0.5,) * 3, (0.5,) * 3, resize="stretch")


def test_an_image_over_the_pixel_limit_is_refused_by_name(tmp_path) -> None:
    """A decompression bomb: the file is small, its pixels are not; refused before they are allocated."""
    import subprocess
    import sys

    import cv2
    import numpy as np

    big = tmp_path / "bomb.png"
    cv2.imwrite(str(big), np.zeros((400, 400, 3), np.uint8))  # 160,000 pixels, against a limit of 10,000
    script = "import sys; from sperm_edge.preprocess import decode_image; decode_image(sys.argv[1])"
    env = {"OPENCV_IO_MAX_IMAGE_PIXELS": "10000", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script, str(big)], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and f"image {big} has more pixels than the 10000 allowed" in done.stderr
    assert "cv2.error" not in done.stderr
