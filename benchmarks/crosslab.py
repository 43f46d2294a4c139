"""Cross-lab benchmark: a model trained on one shared set, tested on the other, on normal vs abnormal sperm.

HuSHeM: `01_Normal` against the other three classes; SMIDS: `Normal_Sperm` against `Abnormal_Sperm`
(its `Non-Sperm` debris is reported apart: what a HuSHeM model calls it). Both directions, beside
the in-distribution rows (each model on its own run's test split). A cell counts as normal when the
model's top class is its normal class (what the runtime counts); probabilities are temperature
scaled with the model's own T, and the ECE is that of the normal-vs-abnormal probability.

Methods: `baseline` (the trained model as it is), `robust` (trained with stain and optics
augmentation, when such runs are given) and `adapted` (`sperm-edge adapt`'s default schedule with K
crops per class of the other lab, tested on the rest of that lab's crops, several draws). The frozen
part of the backbone's feature maps of the other lab's images are computed once per model and reused.

`--select` chooses that schedule: each candidate in SCHEDULES adapts the HuSHeM model to a share of
SMIDS set apart for it (DEV_SHARE, whole pixel-twin groups), shots drawn from that share and scored on
the rest of it. The adapted rows never test on that share; HuSHeM is too small to spare one, so nothing
is chosen on its crops.

    python benchmarks/crosslab.py --hushem RUN --smids RUN [--robust-hushem RUN --robust-smids RUN]
    python benchmarks/crosslab.py --hushem RUN --select

write benchmarks/results/crosslab.json (a list of rows) and crosslab.md, or adapt_select.json and .md.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

from sperm_edge.calibration import calibrated_probs
from sperm_edge.data.folder import load_image_folder
from sperm_edge.data.presets import detect_preset
from sperm_edge.data.splits import group_ids
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_bytes, atomic_write_json
from sperm_edge.metrics import expected_calibration_error

log = logging.getLogger("crosslab")

DEBRIS = "Non-Sperm"
KS = (5, 10, 20)
DEV_SHARE = {"smids": 1 / 3}  # of each set's pixel-twin groups, set apart for --select
DEV_SEED = 2026
SELECT_SEED = 100  # --select's draws are seeded from here, apart from the reported draws (0, 1, ...)
# Candidate adaptation schedules for --select: AdaptConfig fields beside per_class and seed.
SCHEDULES: dict[str, dict] = {
    "frozen": {"stages": 0, "batch_size": 0},
    "frozen-batch64": {"stages": 0, "batch_size": 64},
    "stage1-batch64": {"stages": 1, "batch_size": 64},
    "stage2-batch64": {"stages": 2, "batch_size": 64},
}


def binary_row(probs: np.ndarray, classes: list[str], normal: str, truth_normal: np.ndarray) -> dict:
    """Normal-vs-abnormal figures of N x K probabilities against a boolean truth."""
    predicted = probs.argmax(axis=1) == classes.index(normal)
    p_normal = probs[:, classes.index(normal)]
    sens = float(predicted[truth_normal].mean()) if truth_normal.any() else float("nan")
    spec = float((~predicted[~truth_normal]).mean()) if (~truth_normal).any() else float("nan")
    two = np.stack([1.0 - p_normal, p_normal], axis=1)
    return {
        "balanced_accuracy": round((sens + spec) / 2, 4),
        "sensitivity": round(sens, 4),
        "specificity": round(spec, 4),
        "ece": round(expected_calibration_error(two, truth_normal.astype(int)), 4),
        "percent_normal": round(100 * float(predicted.mean()), 2),
        "percent_normal_truth": round(100 * float(truth_normal.mean()), 2),
        "percent_normal_error": round(100 * float(predicted.mean() - truth_normal.mean()), 2),
        "n": int(len(truth_normal)),
    }


class Model:
    """A run's model split in its backbone: the front's feature maps once, tail + CBAM + head as often as needed."""

    def __init__(self, run: Path) -> None:
        from sperm_edge.model.checkpoint import load_checkpoint

        self.run = run
        self.ckpt = load_checkpoint(run)
        self.model = self.ckpt.build_model()
        card = self.ckpt.card
        self.classes, self.spec, self.temperature = card.classes, card.preprocess, card.temperature
        self.normal = self.ckpt.meta["normal_class"]

    def maps(self, images: list[np.ndarray], stages: int = 0, batch: int = 32):
        """Feature maps of the backbone's front: all of it, or all but its last `stages` block stages."""
        import torch

        from sperm_edge.model.architectures import split_backbone
        from sperm_edge.preprocess import preprocess_batch

        front, _ = split_backbone(self.model.backbone, stages)
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                x = torch.from_numpy(preprocess_batch(images[start : start + batch], self.spec))
                out.append(front(x).half())
        return torch.cat(out)

    @staticmethod
    def logits(model, maps, stages: int = 0) -> np.ndarray:
        import torch

        from sperm_edge.model.architectures import split_backbone

        _, tail = split_backbone(model.backbone, stages)
        with torch.inference_mode():
            return torch.cat(
                [model.head(model.attention(tail(maps[s : s + 256].float()))) for s in range(0, len(maps), 256)]
            ).numpy()


def _sperm_truth(dataset, indices: list[int]) -> tuple[list[int], np.ndarray]:
    """The sperm crops among `indices` (debris left out) and whether each is normal, by the data set's preset."""
    normal = detect_preset(dataset.classes).normal_class
    keep = [i for i in indices if dataset.classes[dataset.labels[i]] != DEBRIS]
    return keep, np.array([dataset.classes[dataset.labels[i]] == normal for i in keep])


def own_test_indices(model: Model, dataset) -> list[int]:
    wanted = set(model.ckpt.meta["split"]["test"])
    return [i for i, p in enumerate(dataset.relative_paths()) if p in wanted]


def dev_share(dataset, name: str) -> np.ndarray:
    """Mask of the crops of data set `name` set apart for --select (whole pixel-twin groups; none for HuSHeM)."""
    groups = group_ids(dataset.pixel_hashes)
    unique = np.unique(groups)
    chosen = np.random.default_rng(DEV_SEED).choice(unique, round(DEV_SHARE.get(name, 0.0) * len(unique)), False)
    return np.isin(groups, chosen)


def adapted_row(model: Model, target, cfg, shots: list[int], test: list[int], test_maps) -> dict:
    """Normal-vs-abnormal figures on the `test` crops (debris left out) of `model` adapted on the `shots`."""
    from sperm_edge.train.adapt import adapt_model, adapted_stages

    adapted, temperature = adapt_model(model.ckpt, target, shots, cfg)
    probs = calibrated_probs(Model.logits(adapted, test_maps, adapted_stages(cfg, adapted.backbone)), temperature)
    keep, truth = _sperm_truth(target, test)
    position = {i: j for j, i in enumerate(test)}
    normal = detect_preset(target.classes).normal_class
    return binary_row(probs[[position[i] for i in keep]], target.classes, normal, truth)


def rows_for(name: str, model: Model, method: str, data: dict, draws: int) -> list[dict]:
    """In-distribution, cross-lab (and debris), and with `adapted`: few-shot rows of one model."""
    from sperm_edge.train.adapt import adapted_stages, sample_shots
    from sperm_edge.train.config import AdaptConfig

    other = "smids" if name == "hushem" else "hushem"
    rows = []
    own = data[name]
    keep, truth = _sperm_truth(own, own_test_indices(model, own))
    logits = Model.logits(model.model, model.maps([own.images[i] for i in keep]))
    probs = calibrated_probs(logits, model.temperature)
    rows.append(
        {"train": name, "test": name, "method": method, "k": 0, **binary_row(probs, model.classes, model.normal, truth)}
    )
    target = data[other]
    started = time.perf_counter()
    maps = model.maps(target.images)
    log.info(
        "%s %s: backbone maps of %d %s crops in %.0f s", name, method, len(target), other, time.perf_counter() - started
    )
    probs = calibrated_probs(Model.logits(model.model, maps), model.temperature)
    keep, truth = _sperm_truth(target, list(range(len(target))))
    rows.append({"train": name, "test": other, "method": method, "k": 0,
                 **binary_row(probs[keep], model.classes, model.normal, truth)})  # fmt: skip
    debris = [i for i in range(len(target)) if target.classes[target.labels[i]] == DEBRIS]
    if debris:
        called = probs[debris].argmax(axis=1)
        rows.append({"train": name, "test": f"{other} {DEBRIS}", "method": method, "k": 0, "n": len(debris),
                     "called_normal": round(float((called == model.classes.index(model.normal)).mean()), 4),
                     "mean_confidence": round(float(probs[debris].max(axis=1).mean()), 4)})  # fmt: skip
    if method != "baseline":
        return rows
    stages = adapted_stages(AdaptConfig(per_class=KS[0]), model.model.backbone)
    if stages:
        maps = model.maps(target.images, stages)
    chosen_on = dev_share(target, other)
    for k in KS:
        for draw in range(draws):
            cfg = AdaptConfig(per_class=k, seed=draw)
            shots, rest = sample_shots(target, k, draw)
            test = [i for i in rest if not chosen_on[i]]
            row = adapted_row(model, target, cfg, shots, test, maps[test])
            rows.append({"train": name, "test": other, "method": "adapted", "k": k, "draw": draw, **row})
            log.info(
                "%s -> %s adapted K=%d draw %d: balanced accuracy %.3f", name, other, k, draw, row["balanced_accuracy"]
            )
    return rows


def select_schedule(model: Model, data: dict, draws: int, names: list[str], out: Path, command: str) -> dict:
    """Each candidate schedule in `names` adapting the HuSHeM `model` to SMIDS's set-apart share: shots drawn from
    the share, scored on the rest of it. The result is rewritten after every adaptation (a stopped run keeps what
    finished)."""
    from sperm_edge.train.adapt import sample_shots
    from sperm_edge.train.config import AdaptConfig

    target = data["smids"]
    share = dev_share(target, "smids")
    members = np.flatnonzero(share)
    position = {int(i): j for j, i in enumerate(members)}
    rows, maps = [], {}
    for name in names:
        fields = SCHEDULES[name]
        stages = fields.get("stages", 0)
        if stages not in maps:
            maps[stages] = model.maps([target.images[i] for i in members], stages)
        for k in KS:
            for draw in range(draws):
                seed = SELECT_SEED + draw
                shots, rest = sample_shots(target, k, seed, among=share)
                val = [i for i in rest if share[i]]
                started = time.perf_counter()
                row = adapted_row(model, target, AdaptConfig(per_class=k, seed=seed, **fields), shots, val,
                                  maps[stages][[position[i] for i in val]])  # fmt: skip
                seconds = round(time.perf_counter() - started, 1)
                rows.append({"schedule": name, "k": k, "draw": draw, "seconds": seconds, **row})
                log.info("select %s K=%d draw %d: balanced accuracy %.3f in %.0f s",
                         name, k, draw, row["balanced_accuracy"], seconds)  # fmt: skip
                result = selection_result(rows, draws, int(share.sum()))
                atomic_write_json(out / "adapt_select.json", result)
                atomic_write_bytes(out / "adapt_select.md", select_markdown(result, command).encode())
    return result


def selection_result(rows: list[dict], draws: int, share_crops: int) -> dict:
    """Mean balanced accuracy per schedule, over K and draws and per K; the best complete schedule is chosen."""

    def mean(key: str, name: str, k: int | None = None) -> float:
        return round(float(np.mean([r[key] for r in rows if r["schedule"] == name and k in (None, r["k"])])), 4)

    names = list(dict.fromkeys(r["schedule"] for r in rows))
    done = {(r["schedule"], r["k"]) for r in rows}
    means = {
        name: {"balanced_accuracy": mean("balanced_accuracy", name), "seconds": mean("seconds", name),
               "complete": sum(r["schedule"] == name for r in rows) == len(KS) * draws,
               **{f"k{k}": mean("balanced_accuracy", name, k) for k in KS if (name, k) in done}}
        for name in names
    }  # fmt: skip
    complete = [name for name in names if means[name]["complete"]]
    chosen = max(complete, key=lambda n: means[n]["balanced_accuracy"]) if complete else None  # a tie: first listed
    return {"chosen": chosen, "schedules": {n: SCHEDULES[n] for n in names}, "means": means,
            "share_crops": share_crops, "draws": draws, "rows": rows}  # fmt: skip


def select_markdown(result: dict, command: str) -> str:
    lines = [
        "# Choosing `sperm-edge adapt`'s schedule on a set-apart share of SMIDS",
        "",
        f"Command: `{command}` ({platform.node()}, CPU). The HuSHeM model adapted to {result['share_crops']} SMIDS"
        " crops set apart for this (never tested on): K crops per class drawn from them, balanced accuracy"
        " (normal vs abnormal) on the rest of them, mean over draws; seconds per adaptation.",
        "",
        "| schedule | fields | " + " | ".join(f"K={k}" for k in KS) + " | mean | seconds |",
        "| --- | --- | " + " | ".join("---" for _ in KS) + " | --- | --- |",
    ]
    for name, m in result["means"].items():
        fields = ", ".join(f"{k}={v}" for k, v in result["schedules"][name].items()) or "defaults"
        by_k = " | ".join(f"{m[f'k{k}']:.3f}" if f"k{k}" in m else "-" for k in KS)
        unfinished = "" if m["complete"] else " (unfinished)"
        lines.append(f"| {name}{unfinished} | {fields} | {by_k} | {m['balanced_accuracy']:.3f} | {m['seconds']:.0f} |")
    lines += ["", f"Chosen: `{result['chosen']}`." if result["chosen"] else "No schedule finished yet."]
    return "\n".join(lines) + "\n"


def summarize(rows: list[dict]) -> list[dict]:
    """Adapted rows pooled over draws: mean and sample std of each figure."""
    out, groups = [], {}
    for r in rows:
        if r["method"] == "adapted":
            groups.setdefault((r["train"], r["test"], r["k"]), []).append(r)
        else:
            out.append(r)
    for (train, test, k), group in groups.items():
        row = {"train": train, "test": test, "method": "adapted", "k": k, "draws": len(group)}
        for key in ("balanced_accuracy", "sensitivity", "specificity", "ece", "percent_normal_error", "n"):
            values = np.array([g[key] for g in group], dtype=float)
            row[key] = round(float(values.mean()), 4)
            row[f"{key}_std"] = round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4)
        out.append(row)
    return out


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# Cross-lab: normal vs abnormal sperm, trained on one set, tested on the other",
        "",
        f"Command: `{command}` ({platform.node()}, CPU). Adapted rows: mean ± sample std over draws of K crops",
        "per class of the other lab, tested on the rest of its crops.",
        "",
        "| train | test | method | K | balanced acc. | sensitivity (normal) | specificity | ECE | % normal error | n |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "balanced_accuracy" not in r:
            continue
        spread = f" ± {r['balanced_accuracy_std']:.3f}" if r.get("draws") else ""
        lines.append(
            f"| {r['train']} | {r['test']} | {r['method']} | {r['k']} | {r['balanced_accuracy']:.3f}{spread} "
            f"| {r['sensitivity']:.3f} | {r['specificity']:.3f} | {r['ece']:.3f} | {r['percent_normal_error']:+.1f} "
            f"| {r['n']:.0f} |"
        )
    lines += ["", "Debris (SMIDS `Non-Sperm`) through the HuSHeM-trained model:", ""]
    for r in rows:
        if "called_normal" in r:
            lines.append(
                f"- {r['method']}: {r['n']} crops, {100 * r['called_normal']:.1f}% called normal, "
                f"mean top confidence {r['mean_confidence']:.3f}"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hushem", type=Path, required=True, help="Run trained on HuSHeM.")
    parser.add_argument("--smids", type=Path, help="Run trained on SMIDS (needed unless --select).")
    parser.add_argument("--robust-hushem", type=Path, help="HuSHeM run trained with stain augmentation.")
    parser.add_argument("--robust-smids", type=Path, help="SMIDS run trained with stain augmentation.")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--draws", type=int, default=3, help="Draws of K crops per class for the adapted rows.")
    parser.add_argument("--select", action="store_true", help="Choose the adaptation schedule (adapt_select.*).")
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES),
                        help="Candidates --select compares.")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if not args.select and args.smids is None:
        parser.error("--smids is needed (unless --select)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = "python benchmarks/crosslab.py " + " ".join(sys.argv[1:])
    try:
        data = {name: load_image_folder(args.data_root / name) for name in ("hushem", "smids")}
        if args.select:
            result = select_schedule(Model(args.hushem), data, args.draws, args.schedules, args.out, command)
            print(select_markdown(result, command))
            return
        rows = []
        for name, method, run in (
            ("hushem", "baseline", args.hushem),
            ("smids", "baseline", args.smids),
            ("hushem", "robust", args.robust_hushem),
            ("smids", "robust", args.robust_smids),
        ):
            if run is not None:
                rows += rows_for(name, Model(run), method, data, args.draws)
    except SpermEdgeError as err:
        sys.exit(f"crosslab.py: {err}")
    rows = summarize(rows)
    atomic_write_json(args.out / "crosslab.json", rows)
    atomic_write_bytes(args.out / "crosslab.md", markdown(rows, command).encode())
    print(markdown(rows, command))


if __name__ == "__main__":
    main()
