"""Make docs/synthetic_vs_real.png: synthetic crops of every class beside real HuSHeM and SMIDS crops.

The real images are read at run time from the shared data folder (never copied into the
repository); only this comparison figure is committed.

    python tools/make_synthetic_grid.py [--data ../shared/data] [--out docs/synthetic_vs_real.png]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.data.synthetic import STYLES, render_crop

REPO = Path(__file__).resolve().parents[1]
TILE = 104
GAP = 6
LABEL_W = 150
FONT = cv2.FONT_HERSHEY_SIMPLEX

log = logging.getLogger("make_synthetic_grid")


def _fit(image_rgb: np.ndarray) -> np.ndarray:
    """Resize a crop to a TILE x TILE tile, keeping its aspect ratio (letterboxed in white)."""
    h, w = image_rgb.shape[:2]
    s = TILE / max(h, w)
    small = cv2.resize(image_rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    tile = np.full((TILE, TILE, 3), 255, np.uint8)
    y, x = (TILE - small.shape[0]) // 2, (TILE - small.shape[1]) // 2
    tile[y : y + small.shape[0], x : x + small.shape[1]] = small
    return tile


def _real(folder: Path, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    picked = rng.choice(len(files), size=min(k, len(files)), replace=False)
    out = []
    for i in sorted(picked):
        bgr = cv2.imdecode(np.fromfile(files[i], np.uint8), cv2.IMREAD_COLOR)  # by content: some .bmp are PNG
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.5, bold: bool = False) -> None:
    cv2.putText(img, text, org, FONT, scale, (20, 20, 20), 2 if bold else 1, cv2.LINE_AA)


def make_grid(data: Path, per_class: int = 6, seed: int = 0) -> np.ndarray:
    """The figure as an RGB array: per style a header, then one row per class (synthetic | real)."""
    rng = np.random.default_rng(seed)
    half = per_class * (TILE + GAP)
    width = LABEL_W + 2 * half + 4 * GAP
    rows: list[np.ndarray] = []
    for name, st in STYLES.items():
        head = np.full((40, width, 3), 255, np.uint8)
        _text(head, f"{name}", (8, 27), 0.7, bold=True)
        _text(head, "synthetic (sperm_edge.data.synthetic)", (LABEL_W, 27), 0.55)
        _text(head, f"real ({name}, {data.name}/{name})", (LABEL_W + half + 4 * GAP, 27), 0.55)
        rows.append(head)
        for c, cls in enumerate(st.classes):
            row = np.full((TILE + GAP, width, 3), 255, np.uint8)
            _text(row, cls, (8, TILE // 2 + 5), 0.48)
            synthetic = [render_crop(seed, c + i * len(st.classes), cls, st)[0] for i in range(per_class)]
            real = _real(data / name / cls, per_class, rng) if (data / name / cls).is_dir() else []
            for i, image in enumerate(synthetic):
                x = LABEL_W + i * (TILE + GAP)
                row[:TILE, x : x + TILE] = _fit(image)
            for i, image in enumerate(real):
                x = LABEL_W + half + 4 * GAP + i * (TILE + GAP)
                row[:TILE, x : x + TILE] = _fit(image)
            rows.append(row)
    return np.vstack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="real data sets folder")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "synthetic_vs_real.png")
    parser.add_argument("--per-class", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.data.is_dir():
        log.warning("real data not found at %s: the figure shows synthetic crops only", args.data)
    grid = make_grid(args.data, args.per_class, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    args.out.write_bytes(buf.tobytes())
    log.info("wrote %s (%dx%d)", args.out, grid.shape[1], grid.shape[0])


if __name__ == "__main__":
    main()
