"""Which explanation finds the head? CAM methods x feature layers on real crops, chosen on validation.

For each run (a checkpoint whose split is recorded), pytorch-grad-cam explains the predicted class of
the run's validation crops (where the choice is made) and test crops (reported only) with each method
on each layer: the explained layer of the shipped engine maps (CBAM's output, 7 x 7 at 224 px), and
the backbone stages before it (`blocks.5`: 7 x 7; `blocks.4` and `blocks.3`: 14 x 14 at 224 px), and,
for the shipped layer, Grad-CAM++ averaged over flips (`aug_smooth`, the dihedral-views lever). Head
masks come from the stain (`sperm_edge.explain.scores.head_masks`). Per method and layer: pointing
game, share of heat on the head, the same share for a centred Gaussian as spread as the maps (the bar
a head-centred set sets), their ratio, and the cost per crop (PyTorch on this CPU).

    python benchmarks/explain_levers.py --run hushem=RUN --run smids=RUN --out benchmarks/results/explanations

writes explain_levers.json and explain_levers.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.explain.scores import TARGET_POINTING, TARGET_RATIO, closeness, head_masks, localisation_scores
from sperm_edge.export.images import split_images
from sperm_edge.hardware import cpu_name
from sperm_edge.io import atomic_write_bytes, atomic_write_json
from sperm_edge.preprocess import preprocess_batch

log = logging.getLogger("explain_levers")
LAYERS = {"attention (shipped)": "attention", "blocks.5": "backbone.blocks.5", "blocks.4": "backbone.blocks.4",
          "blocks.3": "backbone.blocks.3"}  # fmt: skip
METHODS = ("GradCAMPlusPlus", "LayerCAM")


def _maps(model, layer, method: str, images, spec, aug_smooth: bool) -> tuple[list[np.ndarray], float]:
    import pytorch_grad_cam
    import torch

    maps, start = [], time.perf_counter()
    with getattr(pytorch_grad_cam, method)(model=model, target_layers=[layer]) as cam:
        for first in range(0, len(images), 16):
            chunk = images[first : first + 16]
            x = torch.from_numpy(preprocess_batch(chunk, spec))
            for rgb, grid in zip(chunk, cam(input_tensor=x, targets=None, aug_smooth=aug_smooth), strict=True):
                maps.append(cv2.resize(grid.astype(np.float32), (rgb.shape[1], rgb.shape[0])))
    return maps, 1000.0 * (time.perf_counter() - start) / max(1, len(images))


def _scores(maps: list[np.ndarray], masks: list) -> dict:
    scores = localisation_scores(maps, masks)
    if scores is None:
        raise SystemExit("no crop with a stained head to score the maps on")
    return scores


def evaluate(name: str, run: Path, limit: int) -> list[dict]:
    import torch

    from sperm_edge.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run)
    model = ckpt.build_model().eval()
    spec, classes = ckpt.card.preprocess, ckpt.card.classes
    rows = []
    for split in ("val", "test"):
        crops = split_images(ckpt.meta, split, classes)
        keep = np.random.default_rng(0).permutation(len(crops))[:limit] if len(crops) > limit else range(len(crops))
        images, labels = [crops.images[i] for i in keep], [crops.labels[i] for i in keep]
        masks = head_masks(images, labels, classes)
        variants = [(layer, method, False) for layer in LAYERS for method in METHODS]
        variants.append(("attention (shipped)", "GradCAMPlusPlus", True))
        for layer, method, smooth in variants:
            log.info("%s %s: %s on %s%s", name, split, method, layer, " (aug_smooth)" if smooth else "")
            with torch.inference_mode(False):
                maps, ms = _maps(model, model.get_submodule(LAYERS[layer]), method, images, spec, smooth)
            rows.append({"set": name, "split": split, "method": method + (" + aug_smooth" if smooth else ""),
                         "layer": layer, "crops": len(images), "with_head": sum(m is not None for m in masks),
                         "ms_per_cell": round(ms, 1), **_scores(maps, masks)})  # fmt: skip
    return rows


def choose(rows: list[dict]) -> dict[str, dict]:
    """Per set, on validation rows only: the method and layer nearest to both bars."""
    chosen = {}
    for name in sorted({r["set"] for r in rows}):
        pick = max((r for r in rows if r["set"] == name and r["split"] == "val"), key=closeness)
        chosen[name] = {"method": pick["method"], "layer": pick["layer"], "closeness": round(closeness(pick), 3)}
    return chosen


def _markdown(rows: list[dict], chosen: dict, command: str) -> str:
    lines = [
        "# Explanation levers on real crops (pytorch-grad-cam, predicted class)",
        "",
        f"Command: `{command}`. Heat share is set beside a centred Gaussian as spread as the maps (`ratio`); "
        f"issue 37's bars: pointing >= {TARGET_POINTING}, ratio >= {TARGET_RATIO}. Chosen on validation crops: "
        + "; ".join(f"{k}: {v['method']} on {v['layer']}" for k, v in sorted(chosen.items()))
        + ".",
        "",
        "| set | split | method | layer | crops (with head) | pointing | heat share | centre matched | ratio "
        "| ms/cell |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['split']} | {r['method']} | {r['layer']} | {r['crops']} ({r['with_head']}) "
            f"| {r['pointing']['mean']:.3f} | {r['heat_share']['mean']:.3f} "
            f"| {r['heat_share_centre_matched']['mean']:.3f} | {r['ratio']:.2f} | {r['ms_per_cell']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=RUN (a run folder or checkpoint)")
    parser.add_argument("--limit", type=int, default=200, help="at most this many crops per split (seeded)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explanations"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pairs = [item.split("=", 1) for item in args.run]
    if any(len(pair) != 2 for pair in pairs):
        print("error: --run takes NAME=RUN", file=sys.stderr)
        return 2
    rows = [row for name, run in pairs for row in evaluate(name, Path(run), args.limit)]
    chosen = choose(rows)
    command = "python benchmarks/explain_levers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": command, "machine": {"cpu": cpu_name()}, "chosen_on_val": chosen, "rows": rows}
    atomic_write_json(args.out / "explain_levers.json", result)
    atomic_write_bytes(args.out / "explain_levers.md", _markdown(rows, chosen, command).encode())
    print(f"written: {args.out}/explain_levers.json and .md ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
