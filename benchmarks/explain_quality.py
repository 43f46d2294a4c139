"""How good are a bundle's heatmaps on real crops? Localisation on stained heads and ROAD faithfulness, per method.

For each bundle (exported from a run whose checkpoint records its split), on the run's *test* split,
every map the runtime can draw, each for the class the classifier predicts:

- `Grad-CAM++`: the classifier's `cam` output (FP32 ONNX on ONNX Runtime), free with every inference;
- `LayerCAM`: the bundle's explainer (`explain.onnx`, a finer block stage), when export shipped one;
- two baselines: a centred Gaussian blob and a random map as smooth as a CAM (uniform noise on the
  model's feature grid, upsampled).

Head masks come from the stain (`sperm_edge.explain.scores.stain_head_mask`); SMIDS's `Non-Sperm` crops
have no head and are left out of localisation, as are crops where no stained head is found. Figures:
pointing game (peak on the head, 15 px tolerance per 224 px), the share of the map's heat on the head
beside a centred blob as spread as that method's maps on the *validation* split
(`heat_share_centre_matched`), the pointing of the strongest centre blob (width chosen on validation,
`pointing_centre`), pytorch-grad-cam's `ROADCombined` (Rong et al., ICML 2022: mean over removal
percentiles of the confidence drop when the least relevant pixels are removed minus that when the most
relevant are; higher is more faithful) on the PyTorch checkpoint for a class-stratified sample of test
crops, and the median milliseconds a cell's map costs (for `cam`: turning the output into the map, the
network pass being free; for the explainer: its own pass and the map).

    python benchmarks/explain_quality.py --bundle hushem=HUSHEM_BUNDLE \\
        --bundle smids=SMIDS_BUNDLE --out benchmarks/results/explanations

writes explain_quality.json (`rows`: one per set and method with `set`, `method`, `layer`, `pointing`,
`pointing_centre`, `heat_share`, `heat_share_centre_matched`, `ratio`, `road_combined`, `road_random`,
`ms_per_cell`, 95% CIs beside; and how each figure was made), explain_quality.md, localisation.png,
road.png and grid_<name>.png (real test crops: crop, overlay of each method, head outline).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.bundle import load_bundle
from sperm_edge.engines import open_backend
from sperm_edge.explain.engine import engine_explanation
from sperm_edge.explain.maps import Explanation
from sperm_edge.explain.overlay import encode_png, overlay
from sperm_edge.explain.scores import (
    centre_prior,
    head_masks,
    heat_in_mask,
    map_spread,
    mean_ci,
    pointing_hit,
    random_map,
    stain_head_mask,
)
from sperm_edge.export.images import split_images
from sperm_edge.hardware import cpu_name
from sperm_edge.io import atomic_path, atomic_write_bytes, atomic_write_json
from sperm_edge.metrics import softmax
from sperm_edge.preprocess import preprocess_batch
from sperm_edge.runtime.session import bundle_explainer

log = logging.getLogger("explain_quality")

SIGMAS = (0.03, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3)  # centre-prior widths tried on the validation split
ROAD_PERCENTILES = (20, 50, 80)
BASELINES = ("centre blob", "random map")


def _method_maps(bundle, images: list[np.ndarray], batch: int = 16) -> dict[str, list[Explanation]]:
    """Each method's explanation (predicted class) of every image: the `cam` output's, then the explainer's."""
    size, layer = bundle.card.preprocess.img_size, bundle.manifest["explain"]["layer"]
    cams, probs = [], []
    with open_backend(bundle, "ort-cpu", "fp32") as engine:
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            result = engine.infer(preprocess_batch(chunk, bundle.card.preprocess))
            cams.extend(result.cam)
            probs.extend(softmax(result.logits))
    classes = bundle.card.classes
    out = {
        "Grad-CAM++": [
            engine_explanation(rgb, c, p, classes, size, layer) for rgb, c, p in zip(images, cams, probs, strict=True)
        ]
    }
    explainer = bundle_explainer(bundle)
    if explainer is not None:
        out[explainer.method] = [explainer.explain(rgb, p, classes) for rgb, p in zip(images, probs, strict=True)]
    return out


def _choose_sigma(val_masks: list) -> tuple[float, dict]:
    scores = {}
    for sigma in SIGMAS:
        shares = [heat_in_mask(centre_prior(m.shape, sigma), m) for m in val_masks if m is not None]
        scores[sigma] = float(np.mean(shares))
    best = max(scores, key=scores.get)
    return best, {str(k): round(v, 4) for k, v in scores.items()}


def _localisation(maps: list[np.ndarray], masks: list, matched_sigma: float) -> dict:
    """Pointing and heat share of `maps` on the head, beside a centred blob of `matched_sigma`."""
    pairs = [(m, mask) for m, mask in zip(maps, masks, strict=True) if mask is not None]
    return {
        "pointing": mean_ci([float(pointing_hit(m, mask)) for m, mask in pairs]),
        "heat_share": mean_ci([heat_in_mask(m, mask) for m, mask in pairs]),
        "heat_share_centre_matched": mean_ci(
            [heat_in_mask(centre_prior(mask.shape, matched_sigma), mask) for _, mask in pairs]
        ),  # fmt: skip
    }


def _road_sample(labels: list[int], limit: int | None, seed: int) -> list[int]:
    indices = list(range(len(labels)))
    if limit is None or limit >= len(indices):
        return indices
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i in indices:
        by_class.setdefault(labels[i], []).append(i)
    per = max(1, limit // len(by_class))
    picked = [i for group in by_class.values() for i in rng.permutation(group)[:per].tolist()]
    return sorted(picked)


def _road(bundle, images, maps: dict[str, list[np.ndarray]], targets: list[int], indices: list[int]) -> dict:
    """ROADCombined of each named set of input-sized maps on the checkpoint, for `targets`."""
    import torch
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from sperm_edge.model.checkpoint import load_checkpoint

    model = load_checkpoint(bundle.checkpoint_stem()).build_model().eval()
    metric = ROADCombined(percentiles=list(ROAD_PERCENTILES))
    scores: dict[str, list[float]] = {name: [] for name in maps}
    for i in indices:
        x = torch.from_numpy(preprocess_batch([images[i]], bundle.card.preprocess))
        target = [ClassifierOutputSoftmaxTarget(targets[i])]
        for name, cams in maps.items():
            with torch.no_grad():
                scores[name].append(float(metric(x, cams[i][None].astype(np.float32), target, model)[0]))
    return {k: mean_ci(v) for k, v in scores.items()}


def _grid(images, labels, methods: dict[str, list[Explanation]], masks, classes, per_class=3, side=96) -> np.ndarray:
    """Real test crops, one row per class: the crop, then each method's overlay with the head outlined."""
    rows = []
    for label in range(len(classes)):
        picks = [i for i, y in enumerate(labels) if y == label][:per_class]
        tiles = []
        for i in picks:
            rgb = cv2.resize(images[i], (side, side), interpolation=cv2.INTER_AREA)
            panels = [rgb]
            for exps in methods.values():
                over = overlay(rgb, cv2.resize(exps[i].cam, (side, side)))
                if masks[i] is not None:
                    mask = cv2.resize(masks[i].astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
                    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                    cv2.drawContours(over, contours, -1, (255, 255, 255), 1)
                panels.append(over)
            tile = np.hstack(panels)
            caption = np.full((16, tile.shape[1], 3), 255, np.uint8)
            first = next(iter(methods.values()))[i]
            text = f"{classes[label][:14]} -> {classes[first.predicted][:14]} | {' | '.join(methods)}"
            cv2.putText(caption, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(np.vstack([tile, caption]))
        if not tiles:
            continue
        while len(tiles) < per_class:
            tiles.append(np.full_like(tiles[0], 255))
        rows.append(np.hstack([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles]))
    return np.vstack(rows)


def _row(name: str, method: str, layer: str, loc: dict, pointing_centre: dict, road: dict, ms: float | None) -> dict:
    share, matched = loc["heat_share"]["mean"], loc["heat_share_centre_matched"]["mean"]
    return {
        "set": name,
        "method": method,
        "layer": layer,
        "pointing": loc["pointing"]["mean"],
        "pointing_ci95": loc["pointing"]["ci95"],
        "pointing_centre": pointing_centre["mean"],
        "heat_share": share,
        "heat_share_ci95": loc["heat_share"]["ci95"],
        "heat_share_centre_matched": matched,
        "ratio": round(share / matched, 3) if share is not None and matched else None,
        "road_combined": road["mean"],
        "road_combined_ci95": road["ci95"],
        "ms_per_cell": ms,
        "crops": loc["pointing"]["n"],
    }


def evaluate(name: str, bundle_path: Path, road_limit: int | None, seed: int, out: Path) -> tuple[list[dict], dict]:
    bundle = load_bundle(bundle_path)
    section = bundle.manifest.get("explain") or {}
    if not section.get("engine"):
        raise SystemExit(f"{bundle_path}: its models have no cam output")
    meta = json.loads(bundle.checkpoint_stem().with_suffix(".json").read_text())
    classes = bundle.card.classes
    test, val = split_images(meta, "test", classes), split_images(meta, "val", classes)
    methods = _method_maps(bundle, test.images)
    layers = {"Grad-CAM++": section["layer"], "LayerCAM": (section.get("explainer") or {}).get("layer", "")}
    masks, val_masks = head_masks(test.images, test.labels, classes), head_masks(val.images, val.labels, classes)
    sigma, sigma_scores = _choose_sigma(val_masks)
    val_maps = _method_maps(bundle, val.images)
    matched = {m: round(float(np.mean([map_spread(e.cam) for e in exps])), 4) for m, exps in val_maps.items()}
    rng = np.random.default_rng(seed)
    grid = int(max(1, bundle.card.preprocess.img_size // 32))
    size = bundle.card.preprocess.img_size
    centre = [centre_prior(rgb.shape[:2], sigma) for rgb in test.images]
    randoms = [random_map(rgb.shape[:2], rng, grid) for rgb in test.images]
    pointing_centre = mean_ci([float(pointing_hit(c, m)) for c, m in zip(centre, masks, strict=True) if m is not None])
    targets = [e.predicted for e in methods["Grad-CAM++"]]
    indices = _road_sample(test.labels, road_limit, seed)
    road_maps = {m: [e.input_cam for e in exps] for m, exps in methods.items()}
    road_maps["centre blob"] = [centre_prior((size, size), sigma)] * len(test)
    road_maps["random map"] = [random_map((size, size), rng, grid) for _ in test.images]
    road = _road(bundle, test.images, road_maps, targets, indices)
    rows = []
    for method, exps in methods.items():
        loc = _localisation([e.cam for e in exps], masks, matched[method])
        ms = round(statistics.median(e.latency_ms for e in exps), 2)
        rows.append(_row(name, method, layers[method], loc, pointing_centre, road[method], ms))
    for baseline, maps in (("centre blob", centre), ("random map", randoms)):
        row = _row(name, baseline, "-", _localisation(maps, masks, sigma), pointing_centre, road[baseline], None)
        rows.append({**row, "heat_share_centre_matched": None, "ratio": None})  # a baseline is not matched
    details = {
        "bundle": str(bundle_path),
        "test_images": len(test),
        "with_head_masks": sum(m is not None for m in masks),
        "accuracy": round(float(np.mean([t == y for t, y in zip(targets, test.labels, strict=True)])), 4),
        "maps_drawn": section.get("maps", "cam"),
        "centre_prior_sigma": {
            "centre": sigma,
            "val_heat_share": sigma_scores,
            "matched": matched,
            "val_images": len(val),
        },  # fmt: skip
        "random_map_grid": grid,
        "road": {
            "metric": f"pytorch-grad-cam ROADCombined(percentiles={list(ROAD_PERCENTILES)})",
            "crops": len(indices),
        },
    }
    atomic_write_bytes(out / f"grid_{name}.png", encode_png(_grid(test.images, test.labels, methods, masks, classes)))
    return rows, details


def _bars(ax, rows: list[dict], key: str, title: str) -> None:
    sets = sorted({r["set"] for r in rows}, key=[r["set"] for r in rows].index)
    methods = sorted({r["method"] for r in rows}, key=[r["method"] for r in rows].index)
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        picked = [next((r for r in rows if r["set"] == s and r["method"] == method), None) for s in sets]
        means = [r[key] if r and r[key] is not None else 0.0 for r in picked]
        cis = [r.get(f"{key}_ci95") if r else None for r in picked]
        err = np.array([[m - c[0] if c else 0 for m, c in zip(means, cis, strict=True)],
                        [c[1] - m if c else 0 for m, c in zip(means, cis, strict=True)]])  # fmt: skip
        ax.bar(np.arange(len(sets)) + (j - (len(methods) - 1) / 2) * width, means, width, yerr=err, capsize=2,
               label=method)  # fmt: skip
    ax.set_xticks(np.arange(len(sets)), sets)
    ax.axhline(0, c="k", lw=0.6)
    ax.set_title(title)
    ax.legend(fontsize=7)


def _figures(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    _bars(axes[0], rows, "pointing", "pointing game (test crops)")
    _bars(axes[1], rows, "heat_share", "share of heat on the head")
    fig.tight_layout()
    with atomic_path(out / "localisation.png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    _bars(ax, rows, "road_combined", "ROAD combined (higher: more faithful)")
    fig.tight_layout()
    with atomic_path(out / "road.png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _markdown(rows: list[dict], command: str) -> str:
    def f(value, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        "# Heatmaps on real test crops, per method",
        "",
        f"Command: `{command}`. Maps for the predicted class; heads from the stain; `centre matched`: the heat share"
        " of a centred blob as spread as the method's maps on validation; ROAD on the checkpoint. Issue 37's bars:"
        " pointing >= 0.97, heat share >= 1.5x centre matched, ROAD above the random map's with disjoint intervals.",
        "",
        "| set | method | layer | crops | pointing (95% CI) | centre blob pointing | heat share | centre matched "
        "| ratio | ROAD combined (95% CI) | ms/cell |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ci = r["pointing_ci95"] or [None, None]
        road_ci = r["road_combined_ci95"] or [None, None]
        lines.append(
            f"| {r['set']} | {r['method']} | {r['layer']} | {r['crops']} | {f(r['pointing'])} ({f(ci[0])}-{f(ci[1])}) "
            f"| {f(r['pointing_centre'])} | {f(r['heat_share'])} | {f(r['heat_share_centre_matched'])} "
            f"| {f(r['ratio'], 2)} | {f(r['road_combined'], 4)} ({f(road_ci[0], 4)} to {f(road_ci[1], 4)}) "
            f"| {f(r['ms_per_cell'], 1)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", action="append", required=True, help="NAME=BUNDLE (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explanations"))
    parser.add_argument("--road-limit", type=int, default=32, help="ROAD on at most this many test crops per set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pairs = [b.split("=", 1) for b in args.bundle]
    if any(len(p) != 2 for p in pairs):
        parser.error("--bundle takes NAME=PATH")
    args.out.mkdir(parents=True, exist_ok=True)
    rows, details = [], {}
    for name, path in pairs:
        log.info("%s: %s", name, path)
        found, details[name] = evaluate(name, Path(path), args.road_limit, args.seed, args.out)
        rows.extend(found)
    _figures(rows, args.out)
    command = " ".join(["python benchmarks/explain_quality.py", *(argv if argv is not None else sys.argv[1:])])
    report = {
        "command": command,
        "machine": {"cpu": cpu_name(), "python": platform.python_version()},
        "head_masks": " ".join(stain_head_mask.__doc__.split()),
        "rows": rows,
        "sets": details,
    }
    atomic_write_json(args.out / "explain_quality.json", report)
    atomic_write_bytes(args.out / "explain_quality.md", _markdown(rows, command).encode())
    log.info("written: %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
