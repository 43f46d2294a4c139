"""The one way to run a stream: a bundle, a source and an output folder opened together as a session.

    with open_session(bundle, "slide.mp4", "runs/stream", SessionOptions(explain="flagged")) as session:
        session.run()                     # until the source ends, the window closes, stop() or Ctrl-C
    report = session.report               # report.json / report.md, written when the session closed

`sperm-edge run`, `sperm-edge bench`'s stream rows, the benchmarks and the tests all open their
streams here, so every setting that comes from the bundle is derived once, in `pipeline_config`:
temperature scaling, the drift model and its set-aside threshold, the framing of field crops
(`LocalizerConfig.framed`), rolling dihedral views and the per-track inference budget. The session
opens engine, source, explainer, outputs and pipeline in that order and closes them in reverse
(jetson-inference's applications are this shape: open, loop, close); then it writes the report,
with the derived settings under `session`, so two runs can be compared setting by setting.

A run always ends with a report: `status` is `complete` when the source ended (or `--max-frames`),
`stopped` when it was stopped (`stop()`, Ctrl-C, SIGTERM, the window, the live view's finish) and
`aborted` with the `error` when anything failed; the error is still raised after the report is
written. The run header (`run_header`) is the first line of events.jsonl and the report's `run`.
"""

from __future__ import annotations

import logging
import socket
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sperm_edge import __version__
from sperm_edge.bundle import MANIFEST, Bundle, load_bundle
from sperm_edge.engines import open_backend
from sperm_edge.engines.base import Backend
from sperm_edge.errors import SourceLost, SpermEdgeError
from sperm_edge.io import sha256_file
from sperm_edge.localize import CellFinder, LocalizerConfig, find_cells
from sperm_edge.runtime.budget import POLICIES, InferenceBudget
from sperm_edge.runtime.drift import run_drift
from sperm_edge.runtime.explanations import EXPLAIN_MODES, EngineExplanations
from sperm_edge.runtime.flagging import FlagPolicy
from sperm_edge.runtime.outputs import EXPLANATIONS_DIR, RunOutputs, stream
from sperm_edge.runtime.pipeline import MODES, Pipeline, PipelineConfig
from sperm_edge.runtime.scoring import explanations_on_heads, score_events
from sperm_edge.runtime.sources import SourceOptions, open_source
from sperm_edge.runtime.verifier import bundle_verifier

log = logging.getLogger(__name__)

__all__ = ["Session", "SessionOptions", "open_session", "pipeline_config"]


@dataclass
class SessionOptions:
    """Everything `sperm-edge run` lets a user choose; the defaults are the command's.

    `explain`: none, flagged (Grad-CAM++ of each flagged cell) or every (also every cell's map for live
    views); `explain_on_demand`: explain only the cells asked for (`RunOutputs.explain_event`, the live view's
    clicks). `budget`: which tracked cells go to the network in a frame (`runtime.budget`: until a cell's
    class is settled, or with policy `every_frame` in every frame). `find`: the localiser. `policy`: what is
    flagged (default: the bundle's abnormal classes, and cells below `min_confidence` or `min_stability`).
    `set_aside_above`: the drift score above which field mode sets a cell aside, when `set_aside` (default:
    the bundle's `DriftModel.set_aside_threshold` for a bundle without a head verifier; none for a bundle with
    one, whose verifier sets debris aside: on the HuSHeM validation real-crop clips, seeds 0-2, setting aside
    by drift as well lost 10-15% of the heads for at most 2.6 points of precision). `sample_id`, `operator`:
    recorded in the run header.
    """

    backend: str = "auto"
    precision: str | None = None
    threads: int | None = None
    mode: str = "field"
    track: bool | None = None
    tta: bool = False
    rolling_views: bool = True
    batch: int = 32
    crop_scale: float | None = None
    crop_size: int | None = None
    isolate: bool = True
    set_aside: bool = True
    set_aside_above: float | None = None
    budget: InferenceBudget = field(default_factory=InferenceBudget)
    min_confidence: float = 0.6
    min_stability: float = 0.7
    max_frames: int | None = None
    keep_frames: bool = True
    explain: str = "none"
    explain_on_demand: bool = False
    explain_threads: int = 1
    save_video: bool = False
    window: bool = False
    truth: dict | None = None
    sample_id: str | None = None
    operator: str | None = None
    find: CellFinder = find_cells
    policy: FlagPolicy | None = None
    source: SourceOptions = field(default_factory=SourceOptions)

    def check(self) -> None:
        """A clear error for a choice the session cannot run."""
        for name, value, allowed in (
            ("--mode", self.mode, MODES),
            ("--explain", self.explain, EXPLAIN_MODES),
            ("the inference policy", self.budget.policy, POLICIES),
        ):
            if value not in allowed:
                raise SpermEdgeError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


NO_VERIFIER = (
    "This bundle has no head verifier: debris, tails or head fragments the localiser finds may be counted as "
    "heads (train one with `sperm-edge train-verifier` and export with `--verifier`)."
)


def pipeline_config(bundle: Bundle, options: SessionOptions) -> PipelineConfig:
    """How the pipeline runs `bundle`: every setting the bundle decides, derived in this one place."""
    drift = bundle.drift_model()
    gate = options.set_aside_above
    if gate is None and drift is not None and not bundle.manifest.get("verifier"):
        gate = drift.set_aside_threshold  # a verifier sets debris aside; drift then only loses heads
    return PipelineConfig(
        mode=options.mode,
        track=options.track,
        max_batch=options.batch,
        max_frames=options.max_frames,
        keep_frames=options.keep_frames,
        temperature=bundle.card.temperature,
        drift=drift,
        set_aside_above=gate if options.set_aside and drift is not None else None,
        verifier=bundle_verifier(bundle) if options.set_aside and options.mode == "field" else None,
        localizer=LocalizerConfig.framed(bundle.card.framing, options.crop_scale, options.crop_size, options.isolate),
        find=options.find,
        rolling_views=options.rolling_views and not options.tta,
        budget=options.budget,
    )


def describe_config(config: PipelineConfig) -> dict:
    """The derived settings as report.json records them under `session` (comparable between runs)."""
    loc = config.localizer
    return {
        "mode": config.mode,
        "track": config.track,
        "max_batch": config.max_batch,
        "temperature": round(float(config.temperature), 6),
        "drift": config.drift is not None,
        "set_aside_above": None if config.set_aside_above is None else round(float(config.set_aside_above), 6),
        "crop_scale": loc.crop_scale,
        "crop_size": loc.crop_size,
        "isolate": loc.isolate,
        "finder": getattr(config.find, "__qualname__", repr(config.find)),
        "rolling_views": config.rolling_views,
        "budget": asdict(config.budget),
    }


def run_header(bundle: Bundle, engine: Backend, source: str, options: SessionOptions) -> dict:
    """What produced a run, for its audit trail: events.jsonl's first line and report.json's `run`."""
    return {
        "type": "run",
        "run_id": uuid.uuid4().hex,
        "software": f"sperm-edge {__version__}",
        "started": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "host": socket.gethostname(),
        "sample_id": options.sample_id,
        "operator": options.operator,
        "source": source,
        "mode": options.mode,
        "bundle": str(bundle.path),
        "bundle_sha256": sha256_file(bundle.path / MANIFEST),
        "arch": bundle.card.arch,
        "classes": bundle.card.classes,
        "normal_class": bundle.card.normal_class,
        "backend": engine.name,
        "precision": engine.precision,
    }


class Session:
    """An open run: `engine`, `source`, `outputs` and `pipeline` (see `open_session`); `report` once closed."""

    def __init__(self, bundle: Bundle, source: str, out: Path, options: SessionOptions) -> None:
        self.bundle, self.source_uri, self.out, self.options = bundle, source, out, options
        self.config = pipeline_config(bundle, options)
        self.policy = options.policy or FlagPolicy.for_classes(
            bundle.card.abnormal_classes, options.min_confidence, options.min_stability
        )
        self.report: dict | None = None
        self.stats: dict = {}
        self.header: dict | None = None
        self.outputs: RunOutputs | None = None
        self._stack = ExitStack()

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> Session:
        opts = self.options
        try:
            self.engine: Backend = self._stack.enter_context(
                open_backend(self.bundle, opts.backend, opts.precision, opts.threads, tta=opts.tta)
            )
            _check_outputs(self.engine, self.bundle)
            self.source = self._stack.enter_context(open_source(self.source_uri, opts.source))
            maps, self.worker = self._explainers()
            if self.worker is not None:
                self._stack.enter_context(self.worker)
            video = self.out / "annotated.mp4" if opts.save_video else None
            self.header = run_header(self.bundle, self.engine, self.source_uri, opts)
            outputs = RunOutputs(
                self.out, self.worker, video, self.source.fps or 15.0, opts.window,
                explanations=maps, explain_flagged=not opts.explain_on_demand, header=self.header,
            )  # fmt: skip
            self.outputs = self._stack.enter_context(outputs)
            pipeline = Pipeline(
                self.source,
                self.engine,
                self.bundle.card.classes,
                self.bundle.card.preprocess,
                self.config,
                self.policy,
            )
            self.pipeline = self._stack.enter_context(pipeline)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        error = None if exc_type is None else f"{exc_type.__name__}: {exc}".rstrip(": ")
        stopped = exc_type is KeyboardInterrupt or self.pipeline.stopping
        self.stats = self.pipeline.stats()
        try:
            self._stack.close()  # pipeline, outputs, explainer (its queue finished), source, engine
        except Exception as err:  # a failure while closing (a full disk, say) still gets its report
            error = error or f"{type(err).__name__}: {err}"
            raise
        finally:
            status = "aborted" if error and exc_type is not KeyboardInterrupt else "stopped" if stopped else "complete"
            self.report = self._write_report(status, error)

    # -- running ----------------------------------------------------------------------------------
    def run(self, on_result=None) -> None:
        """Drive the stream into the outputs until the source ends, the window closes, `stop()` or Ctrl-C.

        A source that gave up (a camera or stream that could not be reopened) ends the run as a failure, so
        a service manager restarts it (`Restart=on-failure`), and the report says so.
        """
        stream(self.pipeline, self.outputs, on_result)
        if self.source.stats.error and not self.pipeline.stopping:
            raise SourceLost(f"source {self.source_uri} gave up: {self.source.stats.error}")

    def stop(self) -> None:
        """End capture (thread-safe); the frames already read are finished and reported."""
        self.pipeline.stop()

    def describe(self) -> dict:
        """The settings this session derived from its bundle and options (report.json's `session`)."""
        return {**describe_config(self.config), "tta": self.options.tta, "explain": self.options.explain}

    # -- internals --------------------------------------------------------------------------------
    def _explainers(self):
        opts = self.options
        explain = "flagged" if opts.explain_on_demand and opts.explain == "none" else opts.explain
        folder = self.out / EXPLANATIONS_DIR
        maps, worker = explainers(self.bundle, explain, self.engine.describe()["backend"], folder, opts.explain_threads)
        if worker is not None and opts.explain_on_demand:
            worker.preload = False  # torch loads on the first request, not before the stream starts
        return maps, worker

    def _write_report(self, status: str, error: str | None) -> dict | None:
        """report.json and report.md; a report that cannot be written is logged, never raised over the run's error."""
        try:
            return self._report(status, error)
        except Exception as err:
            log.error("the report of %s could not be written: %s (`sperm-edge report %s` rebuilds it)", self.out, err,
                      self.out)  # fmt: skip
            return None

    def _report(self, status: str, error: str | None) -> dict:
        info = {
            "status": status,
            "error": error,
            "run": {k: v for k, v in self.header.items() if k != "type"},
            "bundle": str(self.bundle.path),
            "source": self.source_uri,
            "mode": self.options.mode,
            "backend": self.engine.describe(),
            "session": self.describe(),
            **self.stats,
        }
        if (camera := self.source.camera) is not None:
            info["camera"] = camera  # a camera SDK's model, serial, settings read back, its drops and failures
        if self.config.set_aside_above is not None and self.options.mode == "field":
            info["set_aside_above"] = round(self.config.set_aside_above, 4)
        if self.options.mode == "field":
            info["verifier"] = (
                {"available": True, **self.config.verifier.describe()} if self.config.verifier is not None
                else {"available": False, "note": NO_VERIFIER}
            )  # fmt: skip
        events, aside = self.outputs.events, self.outputs.set_aside  # read back from disk once: hours of cells
        if self.options.truth is not None:
            info["truth"] = score_events(events, self.options.truth)
            on_heads = explanations_on_heads(events, self.options.truth, self.out)
            if on_heads is not None:
                info["truth"]["explanations_on_heads"] = on_heads
        drift = run_drift(self.config.drift, events + aside, self.options.mode)  # every cell scored, counted or not
        if drift is not None:
            info["drift"] = drift
        return self.outputs.finish(self.bundle.card.classes, self.bundle.card.normal_class, info, events, aside)


def explainer_entry(bundle: Bundle) -> dict | None:
    """The manifest's entry of the bundle's LayerCAM explainer when export chose it for explained cells."""
    section = bundle.manifest.get("explain") or {}
    return section.get("explainer") if section.get("maps") == "explainer" else None


def bundle_explainer(bundle: Bundle, threads: int | None = None):
    """The bundle's LayerCAM explainer when export chose it for explained cells (`explain.maps`), else None."""
    entry = explainer_entry(bundle)
    if not entry:
        return None
    from sperm_edge.explain.engine import ExplainerModel

    return ExplainerModel(bundle.file(entry["file"]), bundle.card.preprocess, entry["layer"], threads)


def explainers(bundle: Bundle, explain: str, engine_name: str, folder: Path, threads: int):
    """(engine explanations, None) when the bundle's models have a `cam` output; else (None, the PyTorch worker);
    (None, None) for `explain` none.

    The worker's thread setting is PyTorch's for the whole process, so it is left alone when the
    engine itself is PyTorch (whether asked for by name or chosen by `auto`).
    """
    if explain == "none":
        return None, None
    section = bundle.manifest.get("explain") or {}
    if section.get("engine"):
        from sperm_edge.explain.scores import heatmap_trust

        size, layer = bundle.card.preprocess.img_size, section.get("layer", "attention")
        explainer = bundle_explainer(bundle, threads=1)  # on the writer thread: one core, the stream keeps the rest
        trust = heatmap_trust(section)
        classes = bundle.card.classes
        return EngineExplanations(folder, classes, size, layer, explain, explainer=explainer, trust=trust), None
    from sperm_edge.explain.worker import ExplainWorker

    reason = section.get("reason", "the bundle's models have no cam output (exported before it existed)")
    log.warning("explanations from the retained checkpoint in the background: %s", reason)
    return None, ExplainWorker(bundle.checkpoint_stem(), folder, threads=None if engine_name == "torch" else threads)


def _check_outputs(engine: Backend, bundle: Bundle) -> None:
    """One warm-up inference on a blank crop: the model must give one logit per class the manifest names, or
    every count would go to the wrong class (a model swapped into a bundle, a manifest edited by hand)."""
    import numpy as np

    size = bundle.card.preprocess.img_size
    width = engine.infer(np.zeros((1, 3, size, size), np.float32)).logits.shape[-1]
    if width != len(bundle.card.classes):
        raise SpermEdgeError(
            f"bundle {bundle.path}: its model gives {width} class scores but the manifest names "
            f"{len(bundle.card.classes)} classes ({', '.join(bundle.card.classes)}); re-export the bundle"
        )


def open_session(
    bundle: Bundle | str | Path, source: str, out: str | Path, options: SessionOptions | None = None
) -> Session:
    """A session over `source` with `bundle` (a loaded `Bundle` or its folder), writing into `out`; use it in
    a `with` block. Bad options fail here, before anything is opened."""
    options = options or SessionOptions()
    options.check()
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    return Session(loaded, str(source), Path(out), options)
