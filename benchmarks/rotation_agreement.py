"""Does a bundle's answer survive turning the cell? Rotation agreement on VALIDATION crops, with and without TTA.

Each validation crop of a bundle's checkpoint (its recorded split) is turned by a random angle
(reflected border, the crop's own background) and classified beside the crop as it is, through
the runtime's ONNX Runtime backend, once as it runs by default and once with `--tta` (the 8
dihedral views, `runtime.backends.DihedralTTA`). Per bundle: the share of crops whose class is
the same both ways (`agreement`), and accuracy on the crops as they are and turned.

    python benchmarks/rotation_agreement.py BUNDLE [BUNDLE ...] --out benchmarks/results/rotation_agreement.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.bench.accuracy import predict
from sperm_edge.bench.machine import load_average
from sperm_edge.bundle import load_bundle
from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.images import split_images
from sperm_edge.io import atomic_write_json
from sperm_edge.model.checkpoint import read_meta
from sperm_edge.preprocess import preprocess_batch
from sperm_edge.runtime.backends import open_backend

REPO = Path(__file__).resolve().parents[1]


def turned(images: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Each image rotated about its centre by a uniform random angle, the border reflected."""
    rng = np.random.default_rng(seed)
    out = []
    for image in images:
        h, w = image.shape[:2]
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 360)), 1.0)
        out.append(cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT))
    return out


def measure(path: Path, seed: int, threads: int | None) -> list[dict]:
    bundle = load_bundle(path)
    val = split_images(read_meta(bundle.checkpoint_stem()), "val", bundle.classes)
    crops = preprocess_batch(val.images, bundle.preprocess)
    rotated, labels = preprocess_batch(turned(val.images, seed), bundle.preprocess), np.asarray(val.labels)
    rows = []
    for tta in (False, True):
        with open_backend(bundle, "ort-cpu", "fp32", threads, tta=tta) as engine:
            plain, turn = predict(engine, crops).argmax(1), predict(engine, rotated).argmax(1)
        rows.append({"bundle": str(path), "n": len(labels), "tta": tta,
                     "agreement": round(float(np.mean(plain == turn)), 4),
                     "accuracy": round(float(np.mean(plain == labels)), 4),
                     "accuracy_turned": round(float(np.mean(turn == labels)), 4)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the rotation angles.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "rotation_agreement.json")
    args = parser.parse_args(argv)
    load = load_average()
    try:
        rows = [row for path in args.bundles for row in measure(path, args.seed, args.threads)]
    except SpermEdgeError as err:
        sys.exit(f"rotation_agreement.py: {err}")
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "split": "val", "loadavg_before": load,
              "rows": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
