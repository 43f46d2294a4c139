"""Shape models of sperm heads, debris and tails, as polygons in local coordinates.

Head outlines follow the WHO laboratory manual's descriptions of head defects (WHO 2021, ch. 3):
a normal head is a smooth regular oval (length/width about 1.5-1.8), a tapered head is long and
narrow, a pyriform head is pear-shaped (broad acrosomal end, narrowing towards the neck) and an
amorphous head has an irregular outline. Every outline is returned with unit area, so that the
classes do not differ by size; the renderer scales it to the head area it draws.
"""

from __future__ import annotations

import numpy as np

HEAD_SHAPES = ("normal", "tapered", "pyriform", "amorphous")
N_POINTS = 64  # outline points; index N_POINTS // 2 is the neck (posterior end)


def _unit_area(pts: np.ndarray) -> np.ndarray:
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    pts = pts - pts.mean(axis=0)
    return (pts / np.sqrt(area)).astype(np.float64)


def _profile(t: np.ndarray, half_width: float, power: float, pear: float) -> np.ndarray:
    """A symmetric head: x = cos t (tip at +x, neck at -x), y = w |sin t|^p exp(pear cos t)."""
    s = np.sin(t)
    y = half_width * np.sign(s) * np.abs(s) ** power * np.exp(pear * np.cos(t))
    return np.stack([np.cos(t), y], axis=1)


def _harmonics(rng: np.random.Generator, t: np.ndarray, amplitude: float, orders: range) -> np.ndarray:
    """Smooth random radial factor 1 + sum a_k cos(k t + phi_k), amplitudes falling with order."""
    r = np.ones_like(t)
    for k in orders:
        r += amplitude * rng.uniform(0.3, 1.0) / (k / orders.start) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    return np.clip(r, 0.45, None)


def _bend(pts: np.ndarray, amount: float) -> np.ndarray:
    """Bend along the long axis (y += c x^2): a shear of the plane, so outlines stay simple."""
    return np.stack([pts[:, 0], pts[:, 1] + amount * pts[:, 0] ** 2], axis=1)


def head_outline(rng: np.random.Generator, shape: str, n_points: int = N_POINTS) -> np.ndarray:
    """A head outline of unit area: float (N, 2), anterior (acrosome) tip towards +x, neck at index N/2.

    ``shape`` is one of HEAD_SHAPES. Within a shape, proportions, smoothness and bending vary.
    """
    t = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    if shape == "normal":
        pts = _profile(t, rng.uniform(0.56, 0.68), rng.uniform(0.85, 1.0), rng.uniform(-0.04, 0.10))
        pts *= _harmonics(rng, t, 0.012, range(3, 6))[:, None]
    elif shape == "tapered":
        pts = _profile(t, rng.uniform(0.30, 0.44), rng.uniform(0.95, 1.25), rng.uniform(-0.10, 0.10))
        pts = _bend(pts, rng.uniform(-0.08, 0.08))
    elif shape == "pyriform":
        pts = _profile(t, rng.uniform(0.58, 0.74), rng.uniform(0.9, 1.1), rng.uniform(0.45, 0.80))
        pts = _bend(pts, rng.uniform(-0.06, 0.06))
    elif shape == "amorphous":
        base = _profile(t, rng.uniform(0.5, 0.95), 1.0, rng.uniform(-0.3, 0.3))
        pts = base * _harmonics(rng, t, rng.uniform(0.10, 0.20), range(2, 7))[:, None]
        pts = _bend(pts, rng.uniform(-0.35, 0.35))
    else:
        raise ValueError(f"unknown head shape {shape!r}; valid: {', '.join(HEAD_SHAPES)}")
    return _unit_area(pts)


def blob_outline(rng: np.random.Generator, irregularity: float, n_points: int = 40) -> np.ndarray:
    """A star-shaped blob of unit area (round cells, debris fragments); 0 gives a circle."""
    t = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    r = _harmonics(rng, t, irregularity, range(2, 8)) if irregularity > 0 else np.ones_like(t)
    return _unit_area(np.stack([r * np.cos(t), r * np.sin(t)], axis=1))


def transform(pts: np.ndarray, scale: float, angle: float, center: tuple[float, float]) -> np.ndarray:
    """Scale, rotate by ``angle`` (radians, image coordinates: +x towards +y) and move to ``center``."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s], [-s, c]])
    return pts * scale @ rot + np.asarray(center, dtype=np.float64)


def tail_path(
    rng: np.random.Generator,
    start: np.ndarray,
    angle: float,
    length: float,
    *,
    curl: float = 0.0,
    step: float = 2.0,
) -> np.ndarray:
    """A flagellum as a polyline (N, 2) from ``start`` heading ``angle``, gently waving.

    The heading follows a travelling-wave curvature (a sine of random wavelength) plus a slow
    random drift; ``curl`` adds a constant curvature in rad/px for coiled tails.
    """
    n = max(2, int(length / step))
    s = np.arange(n) * step
    wavelength = rng.uniform(40.0, 140.0)
    amp = rng.uniform(0.005, 0.035)
    drift = np.cumsum(rng.normal(0.0, 0.006, n))
    curvature = amp * np.sin(2 * np.pi * s / wavelength + rng.uniform(0, 2 * np.pi)) + drift * 0.1 + curl
    heading = angle + np.cumsum(curvature) * step
    steps = np.stack([np.cos(heading), np.sin(heading)], axis=1) * step
    return np.asarray(start, dtype=np.float64) + np.concatenate([[[0.0, 0.0]], np.cumsum(steps[:-1], axis=0)])
