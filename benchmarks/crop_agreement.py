"""Which of the real-field bench's changes to a cell move a bundle's answer? Agreement on VALIDATION crops.

Field mode classifies a cell cut from a composed field; class agreement (`real_fields.py`) compares
that answer with the same bundle's answer on the cell's original crop. This takes the field's changes
one at a time, on each validation crop of a bundle's checkpoint (its recorded split), through the
runtime's ONNX Runtime backend, once as it runs by default and once with `--tta` (the 8 dihedral
views, which field mode's rolling views average over):

- `turned`: the crop rotated about its centre by a random angle (reflected border);
- `alone`: the cell cut out as the bench cuts it (`real_fields.sprites`) and pasted back where it was,
  on its own glass colour: its neighbours, other tails and the glass's texture gone;
- `field_glass`: the same on the median glass colour of all the crops, as a composed slide has it;
- `pale` and `dark`: `field_glass` with the stain at the ends of the bench's range (`slide.STAIN_RANGE`);
- `camera`: `field_glass` photographed as a clip's camera does (`video.camera_look`: defocus, noise).

Per bundle and view setting: the share of crops whose class is unchanged by each (`agreement`), and
the accuracy on the crops as they are. Crops in which the bench finds no head (it does not use them)
are left out.

    python benchmarks/crop_agreement.py BUNDLE [BUNDLE ...] --out benchmarks/results/crop_agreement.json
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
from sperm_edge.bundle import Bundle, load_bundle
from sperm_edge.data.real_fields import REAL_STYLES, Sprite, make_sprite
from sperm_edge.data.real_fields.slide import STAIN_RANGE
from sperm_edge.data.real_fields.sprites import render
from sperm_edge.data.real_fields.video import camera_look
from sperm_edge.data.synthetic._optics import finish
from sperm_edge.engines import open_backend
from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.images import split_images
from sperm_edge.io import atomic_write_json
from sperm_edge.model.checkpoint import read_meta
from sperm_edge.preprocess import preprocess_batch

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("turned", "alone", "field_glass", "pale", "dark", "camera")


def turned(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`image` rotated about its centre by a uniform random angle, the border reflected."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 360)), 1.0)
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)


def variants(image: np.ndarray, sprite: Sprite, glass: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    field = render(sprite, glass)
    return {
        "turned": turned(image, rng),
        "alone": render(sprite, sprite.background),
        "field_glass": field,
        "pale": render(sprite, glass, STAIN_RANGE[0]),
        "dark": render(sprite, glass, STAIN_RANGE[1]),
        "camera": finish(rng, field.astype(np.float32), camera_look(rng, glass), jpeg=False),
    }


def style_of(bundle: Bundle) -> str:
    """The real-field style whose sperm classes the bundle's classes hold."""
    for name, style in REAL_STYLES.items():
        if set(style.classes) <= set(bundle.card.classes):
            return name
    raise SpermEdgeError(f"the bundle's classes {bundle.card.classes} are neither HuSHeM's nor SMIDS's")


def measure(path: Path, seed: int, threads: int | None) -> list[dict]:
    bundle = load_bundle(path)
    style = REAL_STYLES[style_of(bundle)]
    val = split_images(read_meta(bundle.checkpoint_stem()), "val", bundle.card.classes)
    kept = [
        (image, label, sprite)
        for image, label, rel in zip(val.images, val.labels, val.paths, strict=True)
        if bundle.card.classes[label] in style.classes
        and (sprite := make_sprite(image, bundle.card.classes[label], rel, False, style.head_width)) is not None
    ]
    if not kept:
        raise SpermEdgeError(f"the bench finds a head in none of the validation crops of {path}")
    glass = np.median(np.array([s.background for _, _, s in kept]), axis=0).astype(np.float32)
    rng = np.random.default_rng(seed)
    changed = [variants(image, sprite, glass, rng) for image, _, sprite in kept]
    crops = preprocess_batch([image for image, _, _ in kept], bundle.card.preprocess)
    labels = np.asarray([label for _, label, _ in kept])
    rows = []
    for tta in (False, True):
        with open_backend(bundle, "ort-cpu", "fp32", threads, tta=tta) as engine:
            plain = predict(engine, crops).argmax(1)
            agreement = {
                name: round(float(np.mean(plain == predict(engine, preprocess_batch(
                    [c[name] for c in changed], bundle.card.preprocess)).argmax(1))), 4)
                for name in VARIANTS
            }  # fmt: skip
        rows.append({"bundle": str(path), "style": style.name, "n": len(labels),
                     "skipped": len(val.images) - len(kept), "tta": tta,
                     "accuracy": round(float(np.mean(plain == labels)), 4), "agreement": agreement})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the rotation angles and the camera.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "crop_agreement.json")
    args = parser.parse_args(argv)
    load = load_average()
    try:
        rows = [row for path in args.bundles for row in measure(path, args.seed, args.threads)]
    except SpermEdgeError as err:
        sys.exit(f"crop_agreement.py: {err}")
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "split": "val", "loadavg_before": load,
              "loadavg_after": load_average(), "rows": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
