"""One benchmark run: every variant on the same bundle, data and machine, side by side.

Order of work: plan the variants (which can run here), load every runnable one at once, score
accuracy on the labelled folder (this doubles as a first warm-up), time them in alternating
rounds, release them, then probe each one's peak memory in a child process. Rows come out one per
variant and batch size, with the status, the figures and the ratios to the reference row
(PyTorch eager FP32 at batch 1, measured in the same run).
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from sperm_edge.bench.accuracy import EvalSet, load_eval_set, predict, score
from sperm_edge.bench.harness import StepCallback, TimingConfig, time_runners
from sperm_edge.bench.machine import load_average, machine_facts
from sperm_edge.bench.memory import measure_memory
from sperm_edge.bench.report import COLUMNS
from sperm_edge.bench.stream import StreamConfig, measure_stream
from sperm_edge.bench.variants import (
    BACKENDS,
    GPU_BACKENDS,
    REFERENCE,
    PlannedVariant,
    Runner,
    model_size_mb,
    open_runner,
    plan_variants,
)
from sperm_edge.bundle import Bundle, load_bundle
from sperm_edge.engines.ort import default_threads

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """What to measure. `backends` always gains the reference (torch-eager): every ratio needs it."""

    bundle: Path
    backends: list[str] = field(default_factory=lambda: list(BACKENDS))
    batches: tuple[int, ...] = (1, 8, 32)
    iters: int = 50
    warmup: int = 5
    rounds: int = 5
    data: Path | None = None
    split: str = "all"
    threads: int | None = None
    memory: bool = True
    eval_batch: int = 32
    stream: StreamConfig | None = None  # None: no end-to-end stream figures

    def timing(self) -> TimingConfig:
        return TimingConfig(tuple(self.batches), self.iters, self.warmup, self.rounds)


@dataclass
class BenchResult:
    rows: list[dict]
    machine: dict
    eval_set: EvalSet | None = None
    stream: dict | None = None


def _open_all(
    stack: ExitStack, bundle: Bundle, planned: list[PlannedVariant], threads: int, devices: dict[str, str]
) -> dict[str, Runner]:
    """Enter every runnable variant (noting its device); one that fails to load is marked failed with its error."""
    runners: dict[str, Runner] = {}
    for item in planned:
        if item.status != "ok":
            continue
        try:
            runner = stack.enter_context(open_runner(bundle, item.variant, threads))
            runners[item.variant.key] = runner
            gpu = item.variant.backend in GPU_BACKENDS
            devices[item.variant.key] = "cuda" if gpu else str(runner.describe().get("device") or "cpu")
        except Exception as err:  # any engine's load error fails that variant only
            log.warning("%s failed to load: %s", item.variant.key, err)
            item.status, item.reason = "failed", f"{type(err).__name__}: {err}"
    return runners


def _score_all(
    runners: dict[str, Runner],
    planned: list[PlannedVariant],
    eval_set: EvalSet,
    batch: int,
    on_step: StepCallback | None,
) -> dict[str, dict]:
    """Accuracy figures per variant key; the reference runs first so the others can be compared with it."""
    reference_key = f"{REFERENCE[0]}/{REFERENCE[1]}"
    order = sorted(runners, key=lambda k: k != reference_key)
    reference_logits = None
    scores: dict[str, dict] = {}
    by_key = {p.variant.key: p for p in planned}
    for i, key in enumerate(order):
        if on_step:
            on_step(f"accuracy {key}", i, len(order))
        try:
            logits = predict(runners[key], eval_set.inputs, batch)
        except Exception as err:
            log.warning("%s failed on the labelled images: %s", key, err)
            by_key[key].status, by_key[key].reason = "failed", f"{type(err).__name__}: {err}"
            continue
        if key == reference_key:
            reference_logits = logits
        scores[key] = score(logits, eval_set, reference_logits)
    if on_step:
        on_step("accuracy", len(order), len(order))
    return scores


def _add_ratios(rows: list[dict]) -> None:
    """speedup: images/s over the reference row's; speedup_same_batch: eager p50 over this row's p50."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("p50_ms")]
    eager = {r["batch"]: r for r in ok if (r["backend"], r["precision"]) == REFERENCE}
    ref = eager.get(1) or (eager[min(eager)] if eager else None)
    for row in rows:
        row["reference"] = ref is not None and row is ref
        if not any(row is r for r in ok):
            continue
        if ref is not None:
            row["speedup"] = round(row["images_per_s"] / ref["images_per_s"], 3)
        same = eager.get(row["batch"])
        if same is not None:
            row["speedup_same_batch"] = round(same["p50_ms"] / row["p50_ms"], 3)


def run_benchmark(cfg: BenchConfig, on_step: StepCallback | None = None) -> BenchResult:
    """Measure every variant of `cfg.backends` on `cfg.bundle`; rows for all, figures for those that ran."""
    bundle = load_bundle(cfg.bundle)
    timing = cfg.timing()
    threads = cfg.threads or default_threads()
    load_before = load_average()
    if load_before and load_before[0] > threads:
        log.warning(
            "load average %.1f with %d threads per engine: other work shares the cores, so timings will be "
            "noisy and multi-threaded engines suffer most (compare with --threads 1)",
            load_before[0],
            threads,
        )
    backends = list(dict.fromkeys([REFERENCE[0], *cfg.backends]))
    planned = plan_variants(bundle, backends)
    eval_set = load_eval_set(cfg.data, bundle, cfg.split) if cfg.data else None
    size = bundle.card.preprocess.img_size
    scores: dict[str, dict] = {}
    devices: dict[str, str] = {}
    with ExitStack() as stack:
        runners = _open_all(stack, bundle, planned, threads, devices)
        if eval_set is not None:
            scores = _score_all(runners, planned, eval_set, cfg.eval_batch, on_step)
            runners = {k: r for k, r in runners.items() if k in scores}
        log.info(
            "timing %d variants at batch %s: %d warm-up calls, %d timed calls over %d rounds",
            len(runners),
            ",".join(map(str, timing.batches)),
            timing.warmup,
            timing.iters,
            timing.effective_rounds,
        )
        timings, timing_failed = time_runners(runners, (3, size, size), timing, on_step)
    memory: dict[str, dict] = {}
    measured = [p for p in planned if p.status == "ok" and p.variant.key not in timing_failed]
    if cfg.memory:
        log.info("peak memory: one child process per variant (%d)", len(measured))
    for i, item in enumerate(measured if cfg.memory else []):
        if on_step:
            on_step(f"memory {item.variant.key}", i, len(measured))
        memory[item.variant.key] = measure_memory(bundle.path, item.variant, threads, max(timing.batches))
    rows = _rows(bundle, planned, timing.batches, threads, devices, timings, timing_failed, scores, memory)
    _add_ratios(rows)
    stream = _stream(bundle, cfg, threads, on_step) if cfg.stream is not None else None
    machine = machine_facts(threads)
    machine["load_average"] = {"before": load_before, "after": load_average()}
    machine["bundle"] = {
        "path": str(bundle.path),
        "arch": bundle.card.arch,
        "img_size": size,
        "classes": bundle.card.classes,
    }
    machine["settings"] = {
        "batches": list(timing.batches),
        "iters": timing.iters,
        "warmup": timing.warmup,
        "rounds": timing.effective_rounds,
        "data": str(cfg.data) if cfg.data else None,
        "split": cfg.split if cfg.data else None,
        "n_images": len(eval_set.labels) if eval_set is not None else None,
    }
    return BenchResult(rows, machine, eval_set, stream)


def _rows(
    bundle: Bundle,
    planned: list[PlannedVariant],
    batches: tuple[int, ...],
    threads: int,
    devices: dict[str, str],
    timings: dict,
    timing_failed: dict[str, str],
    scores: dict[str, dict],
    memory: dict[str, dict],
) -> list[dict]:
    """One row per variant and batch size, every column present (None where not measured)."""
    rows = []
    for item in planned:
        variant = item.variant
        status, reason = item.status, item.reason
        if variant.key in timing_failed:
            status, reason = "failed", timing_failed[variant.key]
        for batch in batches:
            row = dict.fromkeys(COLUMNS)
            row.update(
                {
                    "backend": variant.backend,
                    "precision": variant.precision,
                    "batch": batch,
                    "status": status,
                    "reason": reason,
                    "device": devices.get(variant.key),
                    "model_file": variant.file,
                    "model_mb": model_size_mb(bundle, variant),
                    "threads": threads,
                }
            )
            if status == "ok":
                row.update(timings[(variant.key, batch)].summary())
                row.update(scores.get(variant.key, {}))
                row.update(memory.get(variant.key, {}))
            rows.append(row)
    return rows


def _stream(bundle: Bundle, cfg: BenchConfig, threads: int, on_step: StepCallback | None) -> dict:
    """The end-to-end figures; a failure there is reported in them and does not lose the rows measured."""
    log.info(
        "end-to-end stream: modes %s, %d frames each, with and without Grad-CAM++",
        ",".join(cfg.stream.modes),
        cfg.stream.frames,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="sperm-edge-bench-") as work:
            return measure_stream(bundle, cfg.data, Path(work), cfg.stream, threads, on_step)
    except Exception as err:  # the runtime, the explainer or the generator: report, keep the rows
        log.warning("end-to-end stream failed: %s", err)
        return {"runs": [], "gradcam": None, "error": f"{type(err).__name__}: {err}"}
