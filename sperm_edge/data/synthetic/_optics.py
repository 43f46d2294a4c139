"""From stain densities to a camera image: background, Beer-Lambert colour, microscope optics, sensor.

A ``Canvas`` collects optical densities while cells are drawn; ``compose`` turns them into the
clean transmitted image of the slide (background colour and texture times the stains'
transmittance), and ``finish`` photographs it: uneven illumination, defocus blur, lateral
chromatic aberration, sensor noise and JPEG compression.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sperm_edge.data.synthetic._style import Style

LINE_DENSITY = 1.2  # stain density of a line drawn at 255 (midpieces, tails, specks)


class Canvas:
    """Optical densities of a slide region while cells are drawn into it.

    ``od`` has four float32 channels: nuclear stain, acrosome stain, halo (log-brightening around
    heads) and a spare one that ``compose`` fills with the log of the background texture.
    ``lines`` holds thin anti-aliased structures (midpieces, tails, specks) as uint8 nuclear density.
    """

    NUCLEAR, ACROSOME, HALO = 0, 1, 2

    def __init__(self, height: int, width: int) -> None:
        self.od = np.zeros((height, width, 4), np.float32)
        self.lines = np.zeros((height, width), np.uint8)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return self.lines.shape  # type: ignore[return-value]


@dataclass(frozen=True)
class Look:
    """Colours and optics of one image (or one video), drawn independently of any class."""

    bg: np.ndarray  # (3,) RGB of the clear background
    nuclear: np.ndarray  # (3,) absorbance at unit density
    acrosome: np.ndarray  # (3,)
    blur: float
    noise: float
    chroma_shift: float
    chroma_angle: float
    jpeg_quality: int
    halo: float


def sample_look(rng: np.random.Generator, style: Style) -> Look:
    """Draw the colours and optics of one image from the style's ranges."""
    lo, hi = np.asarray(style.bg[0]), np.asarray(style.bg[1])
    t = 0.65 * rng.uniform() + 0.35 * rng.uniform(size=3)
    mix = rng.uniform()
    gain = rng.uniform(*style.gain)
    hue = (1 - mix) * np.asarray(style.nuclear) + mix * np.asarray(style.nuclear_alt)
    return Look(
        bg=(lo + t * (hi - lo)).astype(np.float32),
        nuclear=(hue * gain).astype(np.float32),
        acrosome=(np.asarray(style.acrosome) * gain * rng.uniform(0.7, 1.2)).astype(np.float32),
        blur=float(rng.uniform(*style.blur)),
        noise=float(rng.uniform(*style.noise)),
        chroma_shift=float(rng.uniform(*style.chroma_shift)),
        chroma_angle=float(rng.uniform(0, 2 * np.pi)),
        jpeg_quality=int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1)),
        halo=float(rng.uniform(*style.halo)),
    )


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-ish random field with features about ``cell`` px across (float32)."""
    gh, gw = max(2, int(height / cell) + 2), max(2, int(width / cell) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def background_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Log-brightness texture of the smear (uneven mounting medium, faint stain): float32 about 0."""
    tex = smooth_noise(rng, height, width, rng.uniform(60, 160)) * np.float32(rng.uniform(0.01, 0.03))
    tex += smooth_noise(rng, height, width, rng.uniform(6, 14)) * np.float32(rng.uniform(0.004, 0.012))
    return tex


def compose(canvas: Canvas, look: Look, log_gain: np.ndarray | None = None) -> np.ndarray:
    """Clean transmitted RGB image (float32 (h, w, 3), 0-255 scale, may exceed 255 in halos).

    ``log_gain`` (h, w) multiplies the light by ``exp(log_gain)``: background texture and, for
    still images, illumination. One ``cv2.transform`` applies Beer-Lambert to all channels at once.
    """
    m = np.empty((3, 5), np.float32)
    m[:, 0], m[:, 1], m[:, 2], m[:, 3] = -look.nuclear, -look.acrosome, look.halo, 1.0
    m[:, 4] = np.log(look.bg)
    h, w = canvas.shape
    out = np.empty((h, w, 3), np.float32)
    for y in range(0, h, 512):  # in strips: a whole slide's float copies would be large
        buf = canvas.od[y : y + 512].copy()
        buf[..., 0] += canvas.lines[y : y + 512] * np.float32(LINE_DENSITY / 255.0)
        if log_gain is not None:
            buf[..., 3] = log_gain[y : y + 512]
        out[y : y + 512] = cv2.exp(cv2.transform(buf, m))
    return out


def illumination(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Köhler illumination is never perfect: log-brightness of a linear gradient and vignetting (h, w).

    Computed on a coarse grid and resized: the field is smooth, and this is much cheaper.
    """
    gh, gw = max(2, height // 16 + 2), max(2, width // 16 + 2)
    scale = 16.0 / max(width, height)
    x = ((np.arange(gw, dtype=np.float32) - (width / 16) / 2) * scale)[None, :]
    y = ((np.arange(gh, dtype=np.float32) - (height / 16) / 2) * scale)[:, None]
    a = rng.uniform(0, 2 * np.pi)
    g = rng.uniform(0.0, 0.12)
    cx, cy = rng.uniform(-0.2, 0.2, size=2)
    v = rng.uniform(0.0, 0.25)
    grid = g * np.cos(a) * x + g * np.sin(a) * y - v * ((x - cx) ** 2 + (y - cy) ** 2) + rng.uniform(-0.02, 0.03)
    grid = grid.astype(np.float32)
    return cv2.resize(grid, (gw * 16, gh * 16), interpolation=cv2.INTER_LINEAR)[:height, :width].copy()


_NOISE_BANKS: dict[tuple[int, int], np.ndarray] = {}


def _noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Unit Gaussian noise (h, w, 3): a random window of a fixed bank (drawing fresh noise is slow).

    The bank's size depends only on the requested size and its content on a fixed seed, so the
    result depends only on ``rng``, whatever was rendered before.
    """
    bh, bw = (height + 128 + 255) // 256 * 256, (width + 128 + 255) // 256 * 256
    bank = _NOISE_BANKS.get((bh, bw))
    if bank is None:
        bank = np.random.default_rng(20170306).standard_normal((bh, bw, 3), dtype=np.float32)
        _NOISE_BANKS[(bh, bw)] = bank
    y0, x0 = int(rng.integers(0, bh - height + 1)), int(rng.integers(0, bw - width + 1))
    return bank[y0 : y0 + height, x0 : x0 + width]


def finish(
    rng: np.random.Generator,
    clean: np.ndarray,
    look: Look,
    gain: np.ndarray | None = None,
    *,
    jpeg: bool = True,
    blur: float | None = None,
) -> np.ndarray:
    """Photograph a clean image: illumination, defocus, chromatic aberration, noise, JPEG -> uint8 RGB.

    ``gain`` (h, w, 3) is the illumination, applied here when the clean image does not carry it
    already (video frames move over the slide while the illumination stays with the camera).
    """
    img = clean
    if gain is not None:
        img = cv2.multiply(img, gain)
    sigma = look.blur if blur is None else blur
    if sigma > 0.2:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    h, w = img.shape[:2]
    if look.chroma_shift > 0.05:
        dx, dy = look.chroma_shift * np.cos(look.chroma_angle), look.chroma_shift * np.sin(look.chroma_angle)
        r, g, b = cv2.split(img)
        r = cv2.warpAffine(r, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REFLECT)
        b = cv2.warpAffine(b, np.float32([[1, 0, -dx], [0, 1, -dy]]), (w, h), borderMode=cv2.BORDER_REFLECT)
        img = cv2.merge([r, g, b])
    img = cv2.scaleAdd(_noise(rng, h, w), look.noise, img)
    out = np.clip(img, 0, 255, out=img).astype(np.uint8)
    if jpeg:
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality]
        )
        out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out
