"""Choose the INT8 export's default `keep_float` (layers left in float) on validation splits, not test.

For each run: the FP32 ONNX model, then the signed INT8 Q/DQ model (what TensorRT takes) once per
candidate pattern, calibrated on up to 300 training images. Each is scored on the run's validation
split (accuracy drop against FP32 ONNX and top-1 agreement with it) and, for the record only, on
its test split. The rule, fixed before looking: the candidate with the fewest float layers whose
validation drop is at most 1 point and whose validation agreement is at least 0.97 on every run.

    python benchmarks/keep_float.py --runs /path/hushem-run /path/smids-run

writes benchmarks/results/keep_float.json and keep_float.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from sperm_edge.engines.ort import new_session
from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.gate import score
from sperm_edge.export.images import split_images
from sperm_edge.export.int8 import Int8Config, prepare_for_quantization, quantize_int8
from sperm_edge.export.onnx_export import export_onnx
from sperm_edge.export.ort_cpu import ort_logits
from sperm_edge.io import atomic_write_bytes, atomic_write_json

log = logging.getLogger("keep_float")

# In order of preference: fewer layers in float first.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "none": (),
    "stem": ("*conv_stem*",),
    "stem+block0": ("*conv_stem*", "*blocks.0/*"),
    "stem+blocks0-1": ("*conv_stem*", "*blocks.0/*", "*blocks.1/*"),
    "stem+blocks0-2": ("*conv_stem*", "*blocks.0/*", "*blocks.1/*", "*blocks.2/*"),
}
MAX_DROP_POINTS, MIN_AGREEMENT = 1.0, 0.97


def measure_run(run: Path, calib_count: int, work: Path) -> list[dict]:
    """One row per candidate: validation and test figures of its INT8 model beside FP32 ONNX."""
    from sperm_edge.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run)
    classes, spec = ckpt.card.classes, ckpt.card.preprocess
    sets = {part: split_images(ckpt.meta, part, classes) for part in ("val", "test")}
    calib = split_images(ckpt.meta, "train", classes).sample(calib_count)
    fp32 = work / f"{run.name}.onnx"
    export_onnx(ckpt.build_model(), spec.img_size, fp32)
    prepared = prepare_for_quantization(fp32, work / f"{run.name}.pre.onnx")
    reference = {part: ort_logits(new_session(fp32), s.images, spec) for part, s in sets.items()}
    base = {part: score("fp32", reference[part], s.labels, classes) for part, s in sets.items()}
    rows = []
    for name, patterns in CANDIDATES.items():
        log.info("%s: INT8 with %s in float", run, name)
        config = Int8Config(keep_float=patterns)
        result = quantize_int8(prepared, work / f"{run.name}.{name}.onnx", calib.images, spec, "int8", config)
        session = new_session(result.path)
        row = {"run": str(run), "arch": ckpt.card.arch, "candidate": name, "keep_float": list(patterns)}
        for part, images in sets.items():
            figures = score("int8", ort_logits(session, images.images, spec), images.labels, classes, reference[part])
            row[part] = {
                "n": figures.n,
                "fp32_accuracy": base[part].accuracy,
                "int8_accuracy": figures.accuracy,
                "drop_points": round(100 * (base[part].accuracy - figures.accuracy), 3),
                "agreement": figures.top1_agreement_fp32,
            }
        rows.append(row)
    return rows


def choose(rows: list[dict]) -> str | None:
    """The first candidate (fewest float layers) that passes on the validation split of every run."""
    for name in CANDIDATES:
        mine = [r for r in rows if r["candidate"] == name]
        if mine and all(r["val"]["drop_points"] <= MAX_DROP_POINTS and r["val"]["agreement"] >= MIN_AGREEMENT
                        for r in mine):  # fmt: skip
            return name
    return None


def markdown(rows: list[dict], chosen: str | None, command: str) -> str:
    lines = [
        "# INT8 `keep_float` chosen on validation splits",
        "",
        f"Command: `{command}`. Rule: fewest float layers with validation drop <= {MAX_DROP_POINTS:g} point and",
        f"validation top-1 agreement >= {MIN_AGREEMENT} on every run. Chosen: **{chosen or 'none passed'}**.",
        "Test figures are recorded, never used to choose.",
        "",
        "| run | candidate | val n | val FP32 | val INT8 | val agreement | test n | test FP32 | test INT8 "
        "| test agreement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        v, t = r["val"], r["test"]
        lines.append(
            f"| {Path(r['run']).name} | {r['candidate']} | {v['n']} | {v['fp32_accuracy']:.3f} "
            f"| {v['int8_accuracy']:.3f} | {v['agreement']:.3f} | {t['n']} | {t['fp32_accuracy']:.3f} "
            f"| {t['int8_accuracy']:.3f} | {t['agreement']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="Run folders (their data must be here).")
    parser.add_argument("--calib-count", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="keep-float-") as work:
            for run in args.runs:
                rows += measure_run(run, args.calib_count, Path(work))
    except SpermEdgeError as err:
        sys.exit(f"keep_float.py: {err}")
    chosen = choose(rows)
    command = "python benchmarks/keep_float.py " + " ".join(sys.argv[1:])
    atomic_write_json(args.out / "keep_float.json", {"command": command, "chosen": chosen, "rows": rows})
    atomic_write_bytes(args.out / "keep_float.md", markdown(rows, chosen, command).encode())
    print(markdown(rows, chosen, command))


if __name__ == "__main__":
    main()
