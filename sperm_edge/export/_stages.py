"""The stages of `export_bundle`, each writing its files and manifest sections through one BundleWriter."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from sperm_edge.engines.ort import new_session
from sperm_edge.errors import SpermEdgeError
from sperm_edge.explain.scores import closeness
from sperm_edge.export.bundle_writer import BundleWriter
from sperm_edge.export.cam_parity import (
    FP32_TOLERANCE,
    CamParity,
    CamReference,
    compare_cams,
    compare_maps,
    reference_maps,
)
from sperm_edge.export.engines import build_engines, engine_precisions
from sperm_edge.export.gate import Score, score
from sperm_edge.export.images import ImageSet
from sperm_edge.export.int8 import Int8Config, Int8Result, prepare_for_quantization
from sperm_edge.export.int8_search import Int8Search, SearchOutcome, Trial, Verdict
from sperm_edge.export.onnx_export import export_onnx
from sperm_edge.export.ort_cpu import Latency, measure_latency, ort_logits, ort_outputs
from sperm_edge.export.parity import check_onnx, check_parity
from sperm_edge.export.qdq_check import check_tensorrt_qdq
from sperm_edge.model.layer_cam import fine_stages
from sperm_edge.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

FP32_FILE = "model.onnx"
INT8_FILES = {"int8": "model.int8.onnx", "int8_cpu": "model.int8_cpu.onnx"}
EXPLAINER_FILE = "explain.onnx"
MAX_LISTED_SKIPS = 50


def source_section(stem: Path, meta: dict) -> dict:
    """Where the bundle came from: the checkpoint, and what training measured on its validation and test splits
    (accuracy, macro-F1 and calibration error: the clinical report names the model by them)."""
    section = {"checkpoint": str(stem.resolve()), "weights_sha256": meta.get("weights_sha256")}
    for split in ("val", "test"):
        scores = (meta.get("metrics") or {}).get(split)
        if scores:
            keys = ("n", "accuracy", "macro_f1", "ece", "ece_calibrated", "temperature")
            section[f"{split}_metrics"] = {k: scores[k] for k in keys if k in scores}
    return section


def choose_maps(candidates: list[dict]) -> dict:
    """The maps nearest to both bars on validation (`explain.scores.closeness`; ties: the larger heat share over a
    centred blob's) among those that pass their parity check. Unmeasured (no validation crops): the passing
    explainer on the stage before the last stride-2 one (what `benchmarks/results/explanations/explain_levers.md`
    measured best on real crops), else the `cam` output."""
    usable = [c for c in candidates if c.get("parity", {}).get("passed", True)]
    measured = [c for c in usable if "quality" in c]
    if measured:
        return max(measured, key=lambda c: (closeness(c["quality"]), c["quality"]["ratio"]))
    return usable[-1]


def _public(candidate: dict, drop: tuple[str, ...] = ()) -> dict:
    """A candidate's manifest entry: its figures, without the live explainer (and without `drop`)."""
    return {k: v for k, v in candidate.items() if k != "explainer" and k not in drop}


def _set_summary(images: ImageSet) -> dict:
    info = images.describe()
    info["skipped_count"] = len(images.skipped)
    info["skipped"] = images.skipped[:MAX_LISTED_SKIPS]
    return info


class Stages:
    """Runs the stages in order and remembers what later ones need (FP32 logits, latencies, verdicts)."""

    def __init__(
        self, writer: BundleWriter, work: Path, spec: PreprocessSpec, classes: list[str], options, reporter
    ) -> None:
        self.writer, self.work, self.spec, self.classes = writer, work, spec, classes
        self.options, self.reporter = options, reporter
        self.fp32_score: Score | None = None
        self.fp32_logits = None
        self.fp32_val_logits = None
        self.cam_reference: CamReference | None = None
        self.cam_images: list = []
        self.cam_source = ""
        self.latency: dict[str, Latency] = {}
        self.gates: list = []
        self.rejected: list[dict] = []
        self.searches: dict[str, SearchOutcome] = {}

    def fp32(self, model, parity_set: ImageSet, held_out: ImageSet | None, cam_set: ImageSet) -> None:
        from sperm_edge.model.inference import predict_logits

        self.reporter.step("exporting FP32 ONNX")
        path = self.writer.path(FP32_FILE)
        exported = export_onnx(model, self.spec.img_size, path, metadata={"classes": self.classes})
        smoke = check_onnx(path, len(self.classes), self.spec.img_size)
        self.reporter.step(f"checking parity with PyTorch on {len(parity_set)} images")
        torch_logits = predict_logits(model, parity_set.images, self.spec)
        parity = check_parity(
            torch_logits, path, parity_set.images, self.spec, self.options.parity_tolerance, parity_set.source
        )
        entry = {"export": exported.describe(), "smoke_test": smoke.describe(), "parity": parity.describe()}
        self.writer.manifest["explain"] = self._explain_section(model, exported)
        if exported.cam_unavailable is None:
            self.reporter.step(f"checking the cam output against pytorch-grad-cam on {len(cam_set)} images")
            self.cam_images, self.cam_source = cam_set.images, cam_set.source
            self.cam_reference = reference_maps(model, cam_set.images, self.spec, cam_set.source)
            cam_parity = self._cam_parity(path, "fp32")
            entry["cam_parity"] = cam_parity.describe()
            if not cam_parity.passed:
                raise SpermEdgeError(
                    f"the ONNX model's cam output disagrees with pytorch-grad-cam: max |diff| "
                    f"{cam_parity.max_abs_diff:.3g} after normalisation > {FP32_TOLERANCE:g} "
                    f"on {cam_parity.n} images"
                )
        if held_out is not None:
            self.reporter.step(f"scoring FP32 on {len(held_out)} held-out images")
            self.fp32_logits = ort_logits(new_session(path), held_out.images, self.spec)
            self.fp32_score = score("fp32", self.fp32_logits, held_out.labels, self.classes)
            entry["accuracy"] = {**self.fp32_score.describe(), "images": held_out.source, "backend": "ort-cpu"}
            self.writer.manifest["evaluation"] = _set_summary(held_out)
        self.writer.set_model("fp32", FP32_FILE, **entry)

    def explanations(self, model, crops: ImageSet | None, meta: dict) -> None:
        """Choose the maps explained cells get and record how far they can be trusted (`export.explain_quality`):
        the `cam` output, or the LayerCAM explainer on a finer stage shipped as `explain.onnx`."""
        from sperm_edge.export import explain_quality as eq

        section = self.writer.manifest["explain"]
        if not section["engine"]:
            return
        masks, source, outputs = None, "", None
        if crops is not None:
            self.reporter.step(f"measuring the heatmaps on {len(crops)} validation crops")
            masks, source = eq.crop_masks(crops, Path(meta["split"]["data"]), self.classes)
            outputs = ort_outputs(new_session(self.writer.path(FP32_FILE)), crops.images, self.spec)
        candidates = [{"maps": "cam", "method": section["method"], "layer": section["layer"]}]
        if outputs is not None:
            maps = eq.cam_output_maps(crops, outputs, self.classes, self.spec.img_size, section["layer"])
            candidates[0].update(eq.quality(maps, masks, crops, source) or {})
        for stage in fine_stages(model):
            candidate = self._explainer(model, stage)
            if candidate is None:
                break
            if outputs is not None:
                targets = outputs["logits"].argmax(1).tolist()
                maps = eq.explainer_maps(candidate["explainer"], crops, targets)
                candidate.update(eq.quality(maps, masks, crops, source) or {})
            candidates.append(candidate)
        chosen = choose_maps(candidates)
        section["maps"] = chosen["maps"]
        if chosen["maps"] == "explainer":
            shutil.copyfile(chosen["explainer"].path, self.writer.path(EXPLAINER_FILE))
            self.writer.add_file(EXPLAINER_FILE)
            keys = ("method", "layer", "grid", "parity", "ms_per_cell")
            section["explainer"] = {"file": EXPLAINER_FILE, **{k: chosen[k] for k in keys}}
        section.update({k: chosen[k] for k in ("pointing", "heat_share", "heat_share_centre_matched", "quality")
                        if k in chosen})  # fmt: skip
        section["candidates"] = [_public(c, ("quality", "parity")) for c in candidates]

    def _explainer(self, model, stage: int) -> dict | None:
        """The LayerCAM explainer on block stage `stage`, exported and held to pytorch-grad-cam; None when the
        model has no closed form (said in the log)."""
        from sperm_edge.explain.engine import ExplainerModel
        from sperm_edge.export.explain_quality import ms_per_cell
        from sperm_edge.export.onnx_export import export_explainer_onnx
        from sperm_edge.model.layer_cam import UnsupportedLayer

        path = self.work / f"explain.blocks{stage}.onnx"
        try:
            layer = export_explainer_onnx(model, self.spec.img_size, path, stage=stage)
        except UnsupportedLayer as err:
            log.info("no LayerCAM explainer (%s): explained cells get the Grad-CAM++ map", err)
            return None
        explainer = ExplainerModel(path, self.spec, layer)
        self.reporter.step(f"checking the LayerCAM explainer on {layer} against pytorch-grad-cam")
        reference = reference_maps(model, self.cam_images, self.spec, self.cam_source, stage=stage)
        grids = explainer.grids(self.cam_images, reference.targets.tolist())
        parity = compare_maps(grids, reference, "explainer")
        candidate = {"maps": "explainer", "method": ExplainerModel.method, "layer": layer,
                     "grid": list(grids.shape[1:]), "parity": parity.describe(),
                     "ms_per_cell": ms_per_cell(explainer, self.cam_images[0]), "explainer": explainer}  # fmt: skip
        return candidate

    def drift(self, meta: dict) -> None:
        """The drift description from the FP32 model's features of the crops as field mode cuts them with the
        bundle's framing (training split; thresholds on validation)."""
        from sperm_edge.export.drift import add_drift

        self.reporter.step("describing the training distribution for the drift warning")
        add_drift(self.writer, FP32_FILE, meta, self.classes, self.spec, self.writer.manifest.get("framing"))

    @staticmethod
    def _explain_section(model, exported) -> dict:
        """How the bundle's explanations are made: by the engine (the `cam` output) or by the retained checkpoint."""
        from sperm_edge.model.cam_head import explained_layer

        section = {"method": "Grad-CAM++", "layer": explained_layer(model), "engine": exported.cam_unavailable is None}
        if exported.cam_unavailable is None:
            section["outputs"] = list(exported.output_names)
        else:
            section["reason"] = exported.cam_unavailable
        return section

    def _cam_parity(self, path: Path, precision: str) -> CamParity:
        cam = ort_outputs(new_session(path), self.cam_images, self.spec)["cam"]
        return compare_cams(cam, self.cam_reference, precision)

    def int8(self, calib: ImageSet, gate_set: ImageSet, held_out: ImageSet) -> None:
        """INT8 models from the FP32 one, each found by the accuracy-aware search (`export.int8_search`) on
        `gate_set` (validation) and scored on `held_out` (test)."""
        options = self.options
        self.writer.manifest["calibration"] = {**_set_summary(calib), "method": options.method}
        self.writer.manifest["gate_images"] = _set_summary(gate_set)
        first = Int8Config(method=options.method, keep_float=tuple(options.keep_float), percentile=options.percentile)
        self.reporter.step("pre-processing for quantization")
        prepared = prepare_for_quantization(self.writer.path(FP32_FILE), self.work / "model.pre.onnx")
        fp32_session = new_session(self.writer.path(FP32_FILE))
        self.fp32_val_logits = ort_logits(fp32_session, gate_set.images, self.spec)
        fp32_calib = ort_logits(fp32_session, calib.images, self.spec).argmax(1)
        fp32_val = score("fp32", self.fp32_val_logits, gate_set.labels, self.classes)

        def judge(path: Path) -> Verdict:
            session = new_session(path)
            logits = ort_logits(session, gate_set.images, self.spec)
            val = score("int8", logits, gate_set.labels, self.classes, self.fp32_val_logits)
            same = np.concatenate(
                [logits.argmax(1) == self.fp32_val_logits.argmax(1),
                 ort_logits(session, calib.images, self.spec).argmax(1) == fp32_calib]
            )  # fmt: skip
            return Verdict(val, float(same.mean()), len(same))

        search = Int8Search(
            prepared, calib.images, self.spec, judge, fp32_val.accuracy, options.max_drop, self.work / "search",
            options.search_budget, self.reporter.step,
        )  # fmt: skip
        variants = ["int8", "int8_cpu"] if options.cpu_variant else ["int8"]
        for variant in variants:
            self.searches[variant] = outcome = search.run(variant, first)
            chosen = outcome.chosen
            path = self.writer.path(INT8_FILES[variant])
            shutil.copyfile(chosen.result.path, path)
            extra = {}
            if variant == "int8":
                qdq = check_tensorrt_qdq(path, require_per_channel=chosen.config.per_channel)
                if not qdq.ok:
                    raise SpermEdgeError(f"the INT8 model breaks TensorRT's Q/DQ rules: {'; '.join(qdq.problems[:3])}")
                extra["qdq_check"] = qdq.describe()
            self._register(variant, replace(chosen.result, path=path), chosen, held_out, extra)
            self.writer.manifest["models"][variant]["search"] = outcome.describe()
        for precision in self.writer.manifest["models"]:
            self._time(precision)
        for variant in variants:
            self._speed_cost(variant)
            self._decide(variant)

    def _speed_cost(self, variant: str) -> None:
        """What the layers the search kept in float cost: the chosen model's latency beside the first candidate's."""
        outcome = self.searches[variant]
        if outcome.chosen is outcome.first:
            return
        first = measure_latency(outcome.first.result.path, variant, self.spec.img_size, runs=self.options.latency_runs)
        mine, fp32 = self._time(variant).p50_ms, self._time("fp32").p50_ms
        speed = {"p50_ms": mine, "first_candidate_p50_ms": first.p50_ms, "fp32_p50_ms": fp32}
        if fp32 > first.p50_ms:
            speed["speedup_kept"] = round((fp32 - mine) / (fp32 - first.p50_ms), 3)
        self.writer.manifest["models"][variant]["search"]["speed"] = speed

    def _register(self, variant: str, result: Int8Result, trial: Trial, held_out: ImageSet, extra: dict) -> None:
        """Ship `result` (the search's chosen `trial`) with its gate, its test score and its cam parity."""
        session = new_session(result.path)
        test = score(variant, ort_logits(session, held_out.images, self.spec), held_out.labels, self.classes,
                     self.fp32_logits)  # fmt: skip
        gate = replace(trial.gate, allowed=not trial.passed and self.options.allow_drop)
        verdict = trial.verdict
        self.gates.append(gate)
        if variant == "int8_cpu":
            extra = {**extra, "cpu_only": True, "backends": ["ort-cpu"]}
        if self.cam_reference is not None:
            extra = {**extra, "cam_parity": self._cam_parity(result.path, variant).describe()}
        self.writer.set_model(
            variant,
            INT8_FILES[variant],
            quantization=result.describe(),
            calibration=result.config.method,
            keep_float=list(result.config.keep_float),
            accuracy={**test.describe(), "images": held_out.source, "backend": "ort-cpu"},
            gate={
                **gate.describe(),
                "decided_on": self.writer.manifest["gate_images"]["source"],
                "n": verdict.val.n,
                "agreement_images": verdict.agreement_n,
            },
            **extra,
        )
        log.info("%s (validation); on the test split %.4f vs fp32 %.4f", gate.message, test.accuracy,
                 self.fp32_score.accuracy)  # fmt: skip

    def _decide(self, variant: str) -> None:
        """Drop a variant that failed its gate (unless allowed), and the CPU variant when it is not faster."""
        entry = self.writer.manifest["models"][variant]
        gate = entry["gate"]
        reason = None
        cam = entry.get("cam_parity")
        if not gate["passed"] and not gate["allowed"]:
            search = entry.get("search", {})
            if gate["drop_points"] > gate["max_drop_points"]:
                reason = f"accuracy drop {gate['drop_points']:.2f} points > {gate['max_drop_points']:g}"
            else:
                reason = f"top-1 agreement with FP32 {gate['agreement']:.4f} < {gate['min_agreement']:g}"
            tried = len(search.get("candidates", [])) or 1
            reason += f" for the best of {tried} candidates ({search.get('stopped', 'no search')})"
        elif cam is not None and not cam["passed"]:
            reason = f"cam output vs pytorch-grad-cam: Pearson r {cam['pearson_mean']:.3f}, needs {cam['criterion']}"
        elif variant == "int8_cpu" and "int8" not in self.writer.manifest["models"]:
            reason = "the INT8 export was refused (the signed model failed its gate)"
        elif variant == "int8_cpu" and "int8" in self.latency:
            mine, signed = self.latency["int8_cpu"].p50_ms, self.latency["int8"].p50_ms
            if mine >= signed:
                reason = f"not faster on this CPU than the signed INT8 model ({mine:.2f} ms vs {signed:.2f} ms)"
        if reason is None:
            return
        log.warning("%s left out of the bundle: %s", INT8_FILES[variant], reason)
        latency = self.latency.get(variant)
        self.rejected.append(
            {
                "precision": variant,
                "reason": reason,
                "accuracy": entry["accuracy"],
                "gate": gate,
                "p50_ms": latency.p50_ms if latency else None,
                **({"search": entry["search"]} if "search" in entry else {}),
            }
        )
        self.writer.drop_model(variant)
        self.writer.manifest["rejected"] = self.rejected

    def _time(self, precision: str) -> Latency:
        if precision not in self.latency:
            path = self.writer.path(self.writer.manifest["models"][precision]["file"])
            self.latency[precision] = measure_latency(
                path, precision, self.spec.img_size, runs=self.options.latency_runs
            )
        return self.latency[precision]

    def latencies(self) -> None:
        """Batch-1 ORT CPU latency of every shipped model into `benchmarks` (what `--backend auto` reads)."""
        self.reporter.step("timing ONNX Runtime on the CPU")
        for precision in self.writer.manifest["models"]:
            self.writer.add_benchmark(self._time(precision).to_dict())

    def engines(self, target) -> None:

        precisions = engine_precisions(self.writer.manifest["models"], self.options.int8, self.options.fp16)
        build_engines(self.writer, self.work, target, precisions, self.options, self.reporter)
