"""A tiny real bundle for the runtime and explain tests: Lite0+CBAM at 64 px, ImageNet backbone, untrained head.

Built once per test session (both test folders share it through the session's base temp folder)
with the export stage's `export_bundle`, FP32 only.
"""

from __future__ import annotations

from pathlib import Path

IMG_SIZE = 64
STYLE = "hushem"
ARCH = "cbam_efficientnet_lite0"


def make_crops(root: Path, n: int = 48, seed: int = 0) -> Path:
    from sperm_edge.data.synthetic import write_crop_dataset

    if not root.exists():
        write_crop_dataset(root, n, STYLE, seed)
    return root


def make_checkpoint(stem: Path) -> Path:
    """An untrained Lite0+CBAM checkpoint (ImageNet backbone, random head): enough to exercise the runtime."""
    import torch

    from sperm_edge.data.presets import PRESETS, abnormal_classes
    from sperm_edge.model import create_model, get_entry
    from sperm_edge.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    preset = PRESETS[STYLE]
    classes = list(preset.classes)
    model = create_model(ARCH, num_classes=len(classes), pretrained=True).eval()
    meta = {
        "arch": ARCH,
        "classes": classes,
        "normal_class": preset.normal_class,
        "abnormal_classes": abnormal_classes(classes, preset.normal_class),
        "preset": preset.name,
        "preprocess": get_entry(ARCH).preprocess(IMG_SIZE).to_dict(),
        "metrics": {},
    }
    save_checkpoint(stem, model, meta)
    return stem


def build_tiny_bundle(base: Path) -> Path:
    """Build (a few seconds) a tiny bundle under `base`, or reuse the one already there."""
    bundle = base / "tiny-bundle"
    if (bundle / "manifest.json").is_file():
        return bundle
    run = base / "tiny-run"
    run.mkdir(parents=True, exist_ok=True)
    make_checkpoint(run / "best")
    from sperm_edge.export import ExportOptions, export_bundle

    export_bundle(run / "best", bundle, ExportOptions(parity_count=4, latency_runs=3))
    return bundle


def build_drift_bundle(base: Path) -> tuple[Path, Path]:
    """A copy of the tiny bundle with a drift model fitted on generated crops (its train/val split), and the crops.

    Goes through the export stage's own `add_drift` on a writer over the copy, then re-hashes the files.
    """
    import json
    import shutil

    from sperm_edge.bundle import load_bundle
    from sperm_edge.export.bundle_writer import BundleWriter
    from sperm_edge.export.drift import add_drift
    from sperm_edge.io import natural_key

    crops = make_crops(base / "drift-crops", n=48, seed=5)
    bundle = base / "drift-bundle"
    if (bundle / "manifest.json").is_file():
        return bundle, crops
    tiny = load_bundle(build_tiny_bundle(base))
    work = base / "drift-bundle.tmp"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(tiny.path, work)
    files = sorted((p.relative_to(crops).as_posix() for p in crops.glob("[!_]*/*.png")), key=natural_key)
    meta = {"split": {"data": str(crops), "train": files[0::2], "val": files[1::2]}}
    writer = BundleWriter.from_manifest(work, json.loads((work / "manifest.json").read_text()))
    add_drift(writer, "model.onnx", meta, tiny.card.classes, tiny.card.preprocess)
    writer.finish(writer.manifest.get("versions"))
    work.rename(bundle)
    return bundle, crops
