"""How good are the engine's Grad-CAM++ maps on real crops? Localisation on stained heads and ROAD faithfulness.

For each bundle (exported from a run whose checkpoint records its split), on the run's *test*
split:

- maps: the FP32 ONNX model's `cam` output on ONNX Runtime (what `sperm-edge run --explain`
  writes), for the predicted class, mapped onto the crop;
- head masks from the stain (`sperm_edge.explain.scores.stain_head_mask`: green channel, Otsu,
  opening against tails, the component nearest the centre, holes filled); SMIDS's `Non-Sperm`
  crops have no head and are left out of localisation, as are crops where no stained head is found;
- localisation: pointing game (peak on the head, 15 px tolerance per 224 px) and the share of
  the map's heat on the head, against two baselines: a random map as smooth as a CAM (uniform
  noise on the model's feature grid, upsampled) and a centre prior (a Gaussian at the centre,
  the bar to clear on head-centred sets) at two widths chosen on the *validation* split: the
  width that maximises its heat share there (`centre`: the strongest centre prior, close to a
  point at the centre), and the mean spread of the Grad-CAM++ maps there (`centre_matched`: a
  centre blob as smooth as the maps, the fair comparison for heat share);
- faithfulness: pytorch-grad-cam's `ROADCombined` (Rong et al., ICML 2022: mean over removal
  percentiles of the confidence drop when the least relevant pixels are removed minus that when
  the most relevant are; higher is more faithful) on the PyTorch checkpoint, for the maps vs the
  random maps, on all test crops or a class-stratified sample (`--road-limit`).

    python benchmarks/explain_quality.py --bundle hushem=HUSHEM_BUNDLE \\
        --bundle smids=SMIDS_BUNDLE --out benchmarks/results/explanations

writes explain_quality.json (figures with 95% CIs, how each was made, machine), explain_quality.md,
localisation.png, road.png and grid_<name>.png (real test crops: crop, overlay, head outline).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.bundle import load_bundle
from sperm_edge.engines import open_backend
from sperm_edge.explain.engine import engine_explanation
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

log = logging.getLogger("explain_quality")

SIGMAS = (0.03, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3)  # centre-prior widths tried on the validation split
ROAD_PERCENTILES = (20, 50, 80)


def _engine_maps(bundle, images: list[np.ndarray], batch: int = 16) -> list:
    """The engine's explanation (predicted class) of every image, and its feature grid side."""
    size, layer = bundle.card.preprocess.img_size, bundle.manifest["explain"]["layer"]
    out = []
    with open_backend(bundle, "ort-cpu", "fp32") as engine:
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            result = engine.infer(preprocess_batch(chunk, bundle.card.preprocess))
            probs = softmax(result.logits)
            for rgb, cam, p in zip(chunk, result.cam, probs, strict=True):
                out.append(engine_explanation(rgb, cam, p, bundle.card.classes, size, layer))
    return out


def _choose_sigma(val_images: list[np.ndarray], val_masks: list) -> tuple[float, dict]:
    scores = {}
    for sigma in SIGMAS:
        shares = [heat_in_mask(centre_prior(m.shape, sigma), m) for m in val_masks if m is not None]
        scores[sigma] = float(np.mean(shares))
    best = max(scores, key=scores.get)
    return best, {str(k): round(v, 4) for k, v in scores.items()}


KINDS = ("gradcam", "centre", "centre_matched", "random")
LABELS = {
    "gradcam": "Grad-CAM++ (engine)",
    "centre": "centre prior (best on val)",
    "centre_matched": "centre prior (maps' spread)",
    "random": "random smooth map",
}


def _localisation(exps, masks, grid: int, sigmas: dict[str, float], rng: np.random.Generator) -> dict:
    acc: dict[str, list[float]] = {f"{m}_{k}": [] for m in ("pointing", "heat") for k in KINDS}
    acc["head_share_of_crop"] = []
    for exp, mask in zip(exps, masks, strict=True):
        if mask is None:
            continue
        maps = {"gradcam": exp.cam, "random": random_map(mask.shape, rng, grid)}
        maps.update({k: centre_prior(mask.shape, sigmas[k]) for k in ("centre", "centre_matched")})
        for name, heat in maps.items():
            acc[f"pointing_{name}"].append(float(pointing_hit(heat, mask)))
            acc[f"heat_{name}"].append(heat_in_mask(heat, mask))
        acc["head_share_of_crop"].append(float(mask.mean()))
    return {k: mean_ci(v) for k, v in acc.items()}


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


def _road(bundle, images, exps, indices: list[int], grid: int, rng: np.random.Generator) -> dict:
    import torch
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from sperm_edge.model.checkpoint import load_checkpoint

    model = load_checkpoint(bundle.checkpoint_stem()).build_model().eval()
    metric = ROADCombined(percentiles=list(ROAD_PERCENTILES))
    size = bundle.card.preprocess.img_size
    scores: dict[str, list[float]] = {"gradcam": [], "random": []}
    for i in indices:
        x = torch.from_numpy(preprocess_batch([images[i]], bundle.card.preprocess))
        targets = [ClassifierOutputSoftmaxTarget(exps[i].target)]
        maps = {"gradcam": exps[i].input_cam[None], "random": random_map((size, size), rng, grid)[None]}
        for name, cam in maps.items():
            with torch.no_grad():
                scores[name].append(float(metric(x, cam.astype(np.float32), targets, model)[0]))
    return {k: mean_ci(v) for k, v in scores.items()}


def _grid(images, labels, exps, masks, classes, per_class: int = 3, side: int = 112) -> np.ndarray:
    rows = []
    for label in range(len(classes)):
        picks = [i for i, y in enumerate(labels) if y == label][:per_class]
        tiles = []
        for i in picks:
            rgb = cv2.resize(images[i], (side, side), interpolation=cv2.INTER_AREA)
            heat = cv2.resize(exps[i].cam, (side, side))
            over = overlay(rgb, heat)
            if masks[i] is not None:
                mask = cv2.resize(masks[i].astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
                contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(over, contours, -1, (255, 255, 255), 1)
            tile = np.hstack([rgb, over])
            caption = np.full((16, tile.shape[1], 3), 255, np.uint8)
            text = f"{classes[label][:14]} -> {classes[exps[i].predicted][:14]}"
            cv2.putText(caption, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(np.vstack([tile, caption]))
        while len(tiles) < per_class:
            tiles.append(np.full_like(tiles[0], 255))
        rows.append(np.hstack([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles]))
    return np.vstack(rows)


def evaluate(name: str, bundle_path: Path, road_limit: int | None, seed: int, out: Path) -> dict:
    bundle = load_bundle(bundle_path)
    if not (bundle.manifest.get("explain") or {}).get("engine"):
        raise SystemExit(f"{bundle_path}: its models have no cam output")
    meta = json.loads(bundle.checkpoint_stem().with_suffix(".json").read_text())
    test, val = split_images(meta, "test", bundle.card.classes), split_images(meta, "val", bundle.card.classes)
    start = time.perf_counter()
    exps = _engine_maps(bundle, test.images)
    engine_s = time.perf_counter() - start
    grid = int(max(1, bundle.card.preprocess.img_size // 32))
    masks = head_masks(test.images, test.labels, bundle.card.classes)
    sigma, sigma_scores = _choose_sigma(val.images, head_masks(val.images, val.labels, bundle.card.classes))
    matched = round(float(np.mean([map_spread(e.cam) for e in _engine_maps(bundle, val.images)])), 4)
    rng = np.random.default_rng(seed)
    result = {
        "bundle": str(bundle_path),
        "test_images": len(test),
        "with_head_masks": sum(m is not None for m in masks),
        "accuracy": round(float(np.mean([e.predicted == y for e, y in zip(exps, test.labels, strict=True)])), 4),
        "layer": bundle.manifest["explain"]["layer"],
        "map_source": "engine (FP32 ONNX `cam` output on ONNX Runtime CPU), predicted class",
        "cam_parity": {p: m.get("cam_parity") for p, m in bundle.manifest["models"].items()},
        "centre_prior_sigma": {
            "centre": sigma,
            "val_heat_share": sigma_scores,
            "centre_matched": matched,
            "val_images": len(val),
        },
        "random_map_grid": grid,
        "localisation": _localisation(exps, masks, grid, {"centre": sigma, "centre_matched": matched}, rng),
        "engine_ms_per_crop": round(1000.0 * engine_s / max(1, len(test)), 2),
    }
    indices = _road_sample(test.labels, road_limit, seed)
    start = time.perf_counter()
    result["road"] = {
        "metric": f"pytorch-grad-cam ROADCombined(percentiles={list(ROAD_PERCENTILES)}), higher is more faithful",
        "crops": len(indices),
        **_road(bundle, test.images, exps, indices, grid, rng),
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_bytes(
        out / f"grid_{name}.png", encode_png(_grid(test.images, test.labels, exps, masks, bundle.card.classes))
    )
    return result


def _figures(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    names = list(results)
    for ax, metric, title in zip(
        axes, ("pointing", "heat"), ("pointing game", "share of heat on the head"), strict=True
    ):
        for j, kind in enumerate(KINDS):
            means = [results[n]["localisation"][f"{metric}_{kind}"]["mean"] or 0.0 for n in names]
            cis = [results[n]["localisation"][f"{metric}_{kind}"]["ci95"] or [0, 0] for n in names]
            err = np.array(
                [
                    [m - c[0] for m, c in zip(means, cis, strict=True)],
                    [c[1] - m for m, c in zip(means, cis, strict=True)],
                ]
            )
            label = LABELS[kind]
            ax.bar(np.arange(len(names)) + (j - 1.5) * 0.2, means, 0.2, yerr=err, capsize=2, label=label)
        if metric == "heat":
            shares = [results[n]["localisation"]["head_share_of_crop"]["mean"] for n in names]
            ax.scatter(np.arange(len(names)), shares, marker="_", s=600, c="k", label="head area / crop")
        ax.set_xticks(np.arange(len(names)), [f"{n} (n={results[n]['with_head_masks']})" for n in names])
        ax.set_ylim(0, 1.05)
        ax.set_title(title)
    axes[0].legend(fontsize=7, loc="lower left")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_path(out / "localisation.png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for j, kind in enumerate(("gradcam", "random")):
        means = [results[n]["road"][kind]["mean"] for n in names]
        ax.bar(
            np.arange(len(names)) + (j - 0.5) * 0.35,
            means,
            0.35,
            label={"gradcam": "Grad-CAM++ (engine)", "random": "random map"}[kind],
        )
    ax.axhline(0, c="k", lw=0.6)
    ax.set_xticks(np.arange(len(names)), [f"{n} (n={results[n]['road']['crops']})" for n in names])
    ax.set_title("ROAD combined (higher: more faithful)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out / "road.png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _markdown(results: dict) -> str:
    header = (
        "| set | crops (with head) | accuracy | pointing: Grad-CAM++ / centre / centre matched / random "
        "| heat on head: Grad-CAM++ / centre / centre matched / random (head area) | ROAD: Grad-CAM++ / random |"
    )
    lines = ["# Engine Grad-CAM++ on real test crops", "", header, "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        loc, road = r["localisation"], r["road"]

        def f(key: str, loc: dict = loc) -> str:
            return f"{loc[key]['mean']:.3f}" if loc[key]["mean"] is not None else "-"

        lines.append(
            f"| {name} | {r['test_images']} ({r['with_head_masks']}) | {r['accuracy']:.3f} | "
            f"{' / '.join(f(f'pointing_{k}') for k in KINDS)} | "
            f"{' / '.join(f(f'heat_{k}') for k in KINDS)} ({f('head_share_of_crop')}) | "
            f"{road['gradcam']['mean']:.4f} / {road['random']['mean']:.4f} (n={road['crops']}) |"
        )
    lines += [
        "",
        "Written by `benchmarks/explain_quality.py`; 95% CIs and the method of each figure in explain_quality.json.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", action="append", required=True, help="NAME=BUNDLE (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explanations"))
    parser.add_argument("--road-limit", type=int, default=16, help="ROAD on at most this many test crops per set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pairs = [b.split("=", 1) for b in args.bundle]
    if any(len(p) != 2 for p in pairs):
        parser.error("--bundle takes NAME=PATH")
    results = {}
    for name, path in pairs:
        log.info("%s: %s", name, path)
        results[name] = evaluate(name, Path(path), args.road_limit, args.seed, args.out)
    _figures(results, args.out)
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpu": cpu_name(), "python": platform.python_version()},
        "head_masks": " ".join(stain_head_mask.__doc__.split()),
        "results": results,
    }
    atomic_write_json(args.out / "explain_quality.json", report)
    atomic_write_bytes(args.out / "explain_quality.md", _markdown(results).encode())
    log.info("written: %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
