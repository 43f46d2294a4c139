"""The head verifier's data: real crops that show one sperm head, and real-crop pieces that do not.

The verifier answers one question before a field cell is counted, "is this one sperm head?", apart
from the morphology classifier and its lab. Its training folder is written from the real sets:

- `head`: every HuSHeM crop and SMIDS `Normal_Sperm` / `Abnormal_Sperm` crop: one head at the
  centre, framed as the classifier's training crops (which the runtime's field crops copy); a third of
  them again as the runtime cuts a cell at the frame's edge (`at_frame_edge`: a band replicated from
  the frame's last pixels), which a verifier trained without them took for a piece, not a head;
- `not_head`: SMIDS `Non-Sperm` (debris), and from each head crop in turn one of what a localiser
  also finds on a real field (`NEGATIVE_KINDS`):
  `tail`: a window of the crop's size centred on its stain away from the head (midpiece, tail, a
  neighbour's tail), glass beyond the crop; `fragment`: a window centred on the head's rim, so part
  of the head is cut away by the window's edge; `pair`: two head crops shrunk side by side in one
  window (two touching heads in one box); `glass`: the crop's own glass with its noise, no cell;
  `edge`: a window at a corner of the crop, the rest beyond the scan (black, as HuSHeM's borders);
- from real-crop fields (`data.real_fields`, slides of seeds from `FIELD_SEED0`, which no benchmark uses, in every
  look but the held-out one, `FIELD_LOOKS`): every object the runtime's localiser finds on a few frames, cut and
  isolated as the runtime cuts field cells, labelled by the field's truth (`field_crops`): whole heads are
  `head`; debris, parts of heads and finds on no object are `not_head`. A verifier trained on the dataset crops
  alone lost 3-4 of 40 true heads on a real-crop field (field crops carry neighbours, halos and frame edges the
  dataset crops do not).
- from real smear fields (`data.smears`, `--fields`; `DATA/smears` when it is there): every object the localiser
  finds on a whole field, cut and isolated as a run cuts it, labelled by the field's head boxes (`smear_crops`):
  `head` for a whole head, `smearobject` for anything else (specks, tails, midpiece knots, out-of-focus debris).
  Trained on dataset crops and composed fields alone, the verifier set six of ten real heads aside. A fold of
  the fields can be held out (`field_fold`), so that a benchmark scores every field with a verifier that never saw it.

Every image keeps its source crop in `sources.csv`, so a split can be checked against it. The
negatives made from a crop are other parts of the same picture; they share its stain and optics,
which is the point: only the question "one head, centred?" separates them from the positives.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from rich.progress import track

from sperm_edge.data.folder import load_image_folder
from sperm_edge.data.real_fields.looks import HELD_OUT_LOOK, LOOKS
from sperm_edge.data.smears import FOLDS, SmearField, fields_of_fold, load_smears
from sperm_edge.data.truth import box_iou, match_box
from sperm_edge.io import atomic_dir
from sperm_edge.localize import Detection, background_colour

log = logging.getLogger(__name__)

HEAD, NOT_HEAD = "head", "not_head"
VERIFIER_IMAGES, VERIFIER_MODEL = "images", "model"  # the two parts of a `sperm-edge train-verifier` folder
CLASSES = (HEAD, NOT_HEAD)
NEGATIVE_KINDS = ("tail", "fragment", "pair", "glass", "edge")
FIELD_KINDS = ("fielddebris", "fieldpiece", "fieldpart")  # not-heads the localiser finds on real-crop fields
SMEAR_KIND = "smearobject"  # not-heads the localiser finds on real smear fields
SMEAR_SPECKS = 3  # specks cut from each smear field (as a field of debris alone would have them cut)
FIELD_SEED0, FIELD_SLIDES = 100, 8  # slides 100, 101, ... composed for the verifier; benchmarks use seeds below 100
FIELD_FRAMES = 4  # frames cut from each slide's pan
# the slides' looks, in turn: every look but the held-out one. Against 6 plain slides, on the validation clips
# (seeds 0-2; plain, zoom-in, dense, defocus; both sets' standard bundles) it counted 1.0 point fewer false heads
# and found 0.9 points more of the heads, on average over the 8 set x look pairs.
FIELD_LOOKS = tuple(name for name in LOOKS if name != HELD_OUT_LOOK)
POSITIVE_CLASSES = {"hushem": None, "smids": ("Normal_Sperm", "Abnormal_Sperm")}  # None: every class
DEBRIS_CLASSES = {"smids": ("Non-Sperm",)}


def at_frame_edge(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A head crop as the runtime cuts a cell near the frame's edge: a band of one side (10-35% of it) beyond the
    frame, filled by replicating the frame's last row or column (`localize.crop`); the head stays centred."""
    h, w = rgb.shape[:2]
    side, share = int(rng.integers(4)), float(rng.uniform(0.1, 0.35))
    k = max(1, int(share * (w if side < 2 else h)))
    pads = [(0, 0, k, 0), (0, 0, 0, k), (k, 0, 0, 0), (0, k, 0, 0)][side]  # top, bottom, left, right
    kept = [rgb[:, k:], rgb[:, : w - k], rgb[k:], rgb[: h - k]][side]
    return cv2.copyMakeBorder(kept, *pads, cv2.BORDER_REPLICATE)


def _pad_window(rgb: np.ndarray, centre: tuple[float, float], fill: np.ndarray) -> np.ndarray:
    """The window of `rgb`'s own size centred at `centre` (x, y), `fill` beyond the crop."""
    h, w = rgb.shape[:2]
    canvas = np.empty((3 * h, 3 * w, 3), np.uint8)
    canvas[:] = fill
    canvas[h : 2 * h, w : 2 * w] = rgb
    x0, y0 = int(round(centre[0] + w - w / 2)), int(round(centre[1] + h - h / 2))
    return canvas[y0 : y0 + h, x0 : x0 + w].copy()


def _tail(rgb: np.ndarray, head: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    green = cv2.GaussianBlur(rgb[..., 1], (0, 0), 1.0)
    _, stained = cv2.threshold(green, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    ys, xs = np.nonzero(head)
    width = max(np.ptp(xs), np.ptp(ys), 4)
    away = cv2.distanceTransform((1 - head).astype(np.uint8), cv2.DIST_L2, 3) > 1.2 * width
    ty, tx = np.nonzero(stained.astype(bool) & away)
    if not len(tx):
        return None
    k = int(rng.integers(len(tx)))
    return _pad_window(rgb, (float(tx[k]), float(ty[k])), background_colour(rgb))


def _fragment(rgb: np.ndarray, head: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    contours, _ = cv2.findContours(head.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    rim = max(contours, key=cv2.contourArea)[:, 0, :]
    x, y = rim[int(rng.integers(len(rim)))]
    h, w = rgb.shape[:2]
    # the rim point lands on the window's edge: the head is cut in two by it
    side = int(rng.integers(4))
    centre = [(x + w / 2, y), (x - w / 2, y), (x, y + h / 2), (x, y - h / 2)][side]
    return _pad_window(rgb, (float(centre[0]), float(centre[1])), background_colour(rgb))


def _pair(rgb: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    fill = background_colour(rgb)
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = fill
    scale = float(rng.uniform(0.55, 0.7))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    left, right = cv2.resize(rgb, size), cv2.resize(other, size)
    top = (h - size[1]) // 2
    overlap = int(size[0] * float(rng.uniform(0.15, 0.35)))  # the two heads touch or overlap a little
    start = max(0, (w - (2 * size[0] - overlap)) // 2)
    canvas[top : top + size[1], start : start + size[0]] = left
    second = min(start + size[0] - overlap, w - size[0])
    region = canvas[top : top + size[1], second : second + size[0]]
    canvas[top : top + size[1], second : second + size[0]] = np.minimum(region, right)  # darker wins: stained
    return canvas


def _glass(rgb: np.ndarray, head: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    fill = background_colour(rgb)
    noise = rgb.astype(np.float32) - fill
    grey = rgb.mean(axis=2)
    glass = (grey >= np.median(grey)) & ~cv2.dilate(head.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    spread = float(noise[glass].std()) if glass.any() else 3.0
    out = fill + rng.normal(0.0, spread, rgb.shape)
    return np.clip(cv2.GaussianBlur(out.astype(np.float32), (0, 0), 0.8), 0, 255).astype(np.uint8)


def _edge(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    corner = [(0, 0), (w, 0), (0, h), (w, h)][int(rng.integers(4))]
    return _pad_window(rgb, (float(corner[0]), float(corner[1])), np.zeros(3, np.uint8))


def make_negative(kind: str, rgb: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """One `not_head` image of `kind` from a head crop (`other`: a second head crop, for `pair`); None when the
    crop has nothing to make it from (no stained head found, no stain away from the head)."""
    if kind == "pair":
        return _pair(rgb, cv2.resize(other, (rgb.shape[1], rgb.shape[0])), rng)
    if kind == "edge":
        return _edge(rgb, rng)
    from sperm_edge.explain.scores import stain_head_mask  # scipy: imported when pieces are made, not with the CLI

    head = stain_head_mask(rgb)
    if not head.any():
        return None
    makers: dict[str, Callable[[], np.ndarray | None]] = {
        "tail": lambda: _tail(rgb, head, rng),
        "fragment": lambda: _fragment(rgb, head, rng),
        "glass": lambda: _glass(rgb, head, rng),
    }
    return makers[kind]()


def _finds(rgb: np.ndarray, specks: int | None) -> list[tuple[Detection, list[Detection]]]:
    """(find, the finds of its frame) of what the runtime's localiser finds in `rgb`, and up to `specks` (None: all)
    of the specks it drops (`LocalizerConfig.speck_width`, `speck_density`), found with that rule off, at their own
    scale: a field of nothing but debris, with no heads to take the scale from, has them found and cut so."""
    from sperm_edge.localize import LocalizerConfig, find_cells

    found = find_cells(rgb, LocalizerConfig())
    out = [(det, found) for det in found]
    everything = find_cells(rgb, LocalizerConfig(speck_width=0.0, speck_density=0.0))
    dropped = [d for d in everything if not any(_inside(d.center, f.head_box) for f in found)]
    return out + [(det, everything) for det in dropped[:specks]]


def _inside(point: tuple[float, float], box: tuple[int, int, int, int]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def field_crops(
    root: Path, style: str, seed: int, frames: int = FIELD_FRAMES, look: str = "plain"
) -> list[tuple[str, np.ndarray]]:
    """(kind, crop) of every object the runtime's localiser finds on frames of a real-crop field
    (`data.real_fields`), cut and isolated as the runtime cuts them (`localize.crop`, `localize.isolate`):
    `head` for a whole true head (head box overlapping the truth's by 30% or more), `fieldpart` for a detection
    on part of a head, `fielddebris` on debris, `fieldpiece` on no object (a tail, a blend). Cells the frame
    cuts are left out (neither answer is right for them)."""
    from sperm_edge.data.real_fields import RealFieldVideo
    from sperm_edge.localize import crop, isolate

    video = RealFieldVideo(root, frames=60, seed=seed, style=style, look=look)
    found = []
    for index in np.linspace(0, len(video) - 1, frames).astype(int):
        rgb, truth = video.frame(int(index)), video.truth(int(index))
        for det, detections in _finds(rgb, None):
            cell = match_box(det.head_box, truth["cells"])
            if cell is not None and cell["partial"]:
                continue
            if cell is None:
                kind = "fieldpiece"
            elif cell["debris"]:
                kind = "fielddebris"
            else:
                kind = HEAD if box_iou(det.head_box, cell["box"]) >= 0.3 else "fieldpart"
            found.append((kind, isolate(crop(rgb, det.crop_box), det, detections)))
    return found


def smear_crops(field: SmearField, specks: int = SMEAR_SPECKS) -> list[tuple[str, np.ndarray]]:
    """(kind, crop) of every object the runtime's localiser finds on a real smear field, cut and isolated as the
    runtime cuts field cells: `head` for a whole head (head box overlapping the truth's by 30% or more),
    `smearobject` for a find on no head; finds on a head the field's edge cuts, or on part of a head, are left out.
    Up to `specks` of the specks the localiser drops (`LocalizerConfig.speck_width`) are cut too, at their own
    scale, as a field of nothing but debris would have them cut."""
    from sperm_edge.localize import crop, isolate
    from sperm_edge.preprocess import decode_image

    rgb = decode_image(field.path)
    found = []
    for det, detections in _finds(rgb, specks):
        cell = match_box(det.head_box, field.cells)
        if cell is not None and (cell["partial"] or box_iou(det.head_box, cell["box"]) < 0.3):
            continue
        found.append((HEAD if cell is not None else SMEAR_KIND, isolate(crop(rgb, det.crop_box), det, detections)))
    return found


def write_verifier_set(
    root: str | Path,
    out: str | Path,
    seed: int = 0,
    force: bool = False,
    fields: int = FIELD_SLIDES,
    smears: str | Path | None = None,
    field_fold: int | None = None,
    field_folds: int = FOLDS,
) -> dict:
    """Write the verifier's training folder (`out/head`, `out/not_head`, `out/sources.csv`) from the real sets
    under `root` (`hushem/` and/or `smids/`), with the objects found on `fields` real-crop slides per set composed
    from them (`field_crops`, seeds from `FIELD_SEED0`) and on the real smear fields under `smears` (all of them,
    or all but fold `field_fold` of `field_folds`); returns the counts per class and negative kind."""
    root, out = Path(root), Path(out)
    smear_fields = load_smears(smears) if smears is not None else []
    sets = [name for name in POSITIVE_CLASSES if (root / name).is_dir()]
    if not sets:
        from sperm_edge.errors import SpermEdgeError

        raise SpermEdgeError(f"{root} holds neither hushem/ nor smids/: the verifier is trained on the real sets")
    rng = np.random.default_rng(seed)
    kinds = ("debris", *NEGATIVE_KINDS, *FIELD_KINDS, SMEAR_KIND)
    counts: dict[str, int] = {HEAD: 0, **{f"{NOT_HEAD}:{k}": 0 for k in kinds}}
    rows = []
    with atomic_dir(out, force=force) as folder:
        for name in CLASSES:
            (folder / name).mkdir()
        for set_name in sets:
            images = load_image_folder(root / set_name)
            sources = [f"{set_name}/{rel}" for rel in images.relative_paths()]
            wanted = POSITIVE_CLASSES[set_name]
            debris = DEBRIS_CLASSES.get(set_name, ())
            heads = [i for i, y in enumerate(images.labels) if wanted is None or images.classes[y] in wanted]
            for i, y in enumerate(images.labels):
                if images.classes[y] in debris:
                    rows.append(_write(folder, NOT_HEAD, f"{set_name}-debris-{i}", images.images[i], sources[i]))
                    counts[f"{NOT_HEAD}:debris"] += 1
            for n, i in enumerate(heads):
                rgb, source = images.images[i], sources[i]
                rows.append(_write(folder, HEAD, f"{set_name}-{i}", rgb, source))
                counts[HEAD] += 1
                if n % 3 == 0:  # a third of the heads again, as cut at the frame's edge
                    rows.append(_write(folder, HEAD, f"{set_name}-atedge-{i}", at_frame_edge(rgb, rng), source))
                    counts[HEAD] += 1
                kind = NEGATIVE_KINDS[n % len(NEGATIVE_KINDS)]
                other = images.images[heads[int(rng.integers(len(heads)))]]
                negative = make_negative(kind, rgb, other, rng)
                if negative is not None:
                    rows.append(_write(folder, NOT_HEAD, f"{set_name}-{kind}-{i}", negative, source))
                    counts[f"{NOT_HEAD}:{kind}"] += 1
            for field_seed in range(FIELD_SEED0, FIELD_SEED0 + fields):
                look = FIELD_LOOKS[(field_seed - FIELD_SEED0) % len(FIELD_LOOKS)]
                for k, (kind, rgb) in enumerate(field_crops(root, set_name, field_seed, look=look)):
                    cls = HEAD if kind == HEAD else NOT_HEAD
                    name = f"{set_name}-{'fieldhead' if kind == HEAD else kind}-{field_seed}-{k}"
                    rows.append(_write(folder, cls, name, rgb, f"real-field {set_name} seed {field_seed}"))
                    counts[HEAD if kind == HEAD else f"{NOT_HEAD}:{kind}"] += 1
        held_apart = list(fields_of_fold(smear_fields, field_fold, field_folds, held_out=False))
        for field in track(held_apart, description="cutting the smear fields' objects", disable=not held_apart):
            for k, (kind, rgb) in enumerate(smear_crops(field)):
                cls = HEAD if kind == HEAD else NOT_HEAD
                stem = f"smears-{'smearhead' if kind == HEAD else kind}-{Path(field.name).stem}-{k}"
                rows.append(_write(folder, cls, stem, rgb, f"smears/{field.name}"))
                counts[HEAD if kind == HEAD else f"{NOT_HEAD}:{kind}"] += 1
        with open(folder / "sources.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "class", "source"])
            writer.writerows(rows)
    log.info("verifier set in %s: %s", out, counts)
    return counts


def _write(folder: Path, cls: str, stem: str, rgb: np.ndarray, source: Path | str) -> list[str]:
    path = folder / cls / f"{stem}.png"
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        from sperm_edge.errors import SpermEdgeError

        raise SpermEdgeError(f"could not write {path}")
    return [f"{cls}/{path.name}", cls, str(source)]
