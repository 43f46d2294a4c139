"""Pack HuSHeM and SMIDS losslessly into a small folder tree, to carry them to a remote GPU machine.

SMIDS's BMPs take 228 MB. Each image is decoded, optionally squared and resized by the project's
own rule (`sperm_edge.preprocess.resize_rgb`, the first thing training does with it anyway) and
written as lossless WebP under the same class folder and file name plus `.webp`, so sorting,
duplicate groups and therefore the k-fold splits are unchanged. Training at the packed size then
sees exactly the pixels it would see from the originals.

    python tools/pack_data.py --data-root ../shared/data --out .paperdata --size smids=128
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from sperm_edge.data.folder import load_image_folder
from sperm_edge.data.splits import kfold_splits
from sperm_edge.errors import SpermEdgeError
from sperm_edge.preprocess import PreprocessSpec, resize_rgb

LOSSLESS_WEBP = [cv2.IMWRITE_WEBP_QUALITY, 101]  # quality above 100 selects lossless


def pack(source: Path, target: Path, size: int | None) -> int:
    """Write `source`'s images into `target`; returns the bytes written. Checks the 5-fold splits match."""
    original = load_image_folder(source)
    spec = PreprocessSpec(size, (0.0,) * 3, (1.0,) * 3) if size else None
    written = 0
    for path, image in zip(original.paths, original.images, strict=True):
        out = target / path.parent.name / f"{path.name}.webp"
        out.parent.mkdir(parents=True, exist_ok=True)
        pixels = resize_rgb(image, spec) if spec else image
        ok, data = cv2.imencode(".webp", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), LOSSLESS_WEBP)
        if not ok:
            raise RuntimeError(f"cannot encode {path}")
        out.write_bytes(data.tobytes())
        written += data.size
    packed = load_image_folder(target)
    if packed.classes != original.classes or packed.labels != original.labels:
        raise RuntimeError(f"{target}: classes or image order differ from {source}")
    splits = [kfold_splits(d.labels, d.pixel_hashes, 5, 0, 0.15) for d in (original, packed)]
    if splits[0] != splits[1]:
        raise RuntimeError(f"{target}: the 5-fold splits differ from {source}'s")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path(".paperdata"))
    parser.add_argument("--datasets", nargs="+", default=["hushem", "smids"])
    parser.add_argument("--size", nargs="*", default=["smids=128"], help="NAME=SIZE: square-resize that set first")
    args = parser.parse_args()
    try:
        sizes = {name: int(size) for name, size in (item.split("=") for item in args.size)}
    except ValueError:
        parser.error(f"--size takes NAME=PIXELS, not {' '.join(args.size)}")
    for name in args.datasets:
        try:
            written = pack(args.data_root / name, args.out / name, sizes.get(name))
        except SpermEdgeError as err:
            raise SystemExit(f"pack_data: {err}") from None
        print(f"{name}: {written / 1e6:.1f} MB at {sizes.get(name, 'native')} px into {args.out / name}")


if __name__ == "__main__":
    main()
