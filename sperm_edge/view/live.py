"""The live view over a running stream, and the same page over a finished run folder.

    with LiveView(out_dir, classes, normal_class, host, port, token) as view:
        ...open the pipeline and outputs...
        view.attach(pipeline, outputs)
        stream(pipeline, outputs, on_result=view.update)   # the output thread hands frames and events over
        report = outputs.finish(...)
        view.done(report)

`update` costs the stream a reference store and a list append: drawing, encoding and serving happen
on the server's threads (see `frames`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sperm_edge.view.app import build_app
from sperm_edge.view.frames import FrameSlot, JpegFrames
from sperm_edge.view.security import DEFAULT_HOST, DEFAULT_PORT, url_for
from sperm_edge.view.server import ViewServer
from sperm_edge.view.state import Conflict, FinishedControls, RunControls, RunState, load_run


class _Page:
    """A page served on (host, port) with an optional token: its URL, and its server's lifetime."""

    host: str
    token: str | None
    _server: ViewServer

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return url_for(self.host, self.port, self.token)

    def __enter__(self):
        self._server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.__exit__()


class LiveView(_Page):
    """Serves a run while it goes; see the module docstring for the calls, in order."""

    def __init__(
        self,
        out_dir: str | Path,
        classes: list[str],
        normal_class: str | None,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        view_fps: float = 10.0,
        info: dict | None = None,
    ) -> None:
        self.host, self.token = host, token
        self.state = RunState(out_dir, classes, normal_class, info, live=True, figures=self._figures)
        self.slot = FrameSlot()
        self.frames = JpegFrames(self.slot, min_interval=1.0 / max(0.1, view_fps))
        self._app = build_app(self.state, self, self.frames, view_fps, token)
        self._server = ViewServer(self._app, host, port)
        self._controls: RunControls | None = None
        self._pipeline: Any = None
        self._outputs: Any = None

    def __exit__(self, *exc: object) -> None:
        self.slot.close()
        super().__exit__(*exc)

    # -- the stream's side --------------------------------------------------------------------------
    def attach(self, pipeline, outputs, backend: dict | None = None) -> None:
        """Connect the buttons and figures to the running pipeline and its outputs (`backend`: its description)."""
        self._pipeline, self._outputs = pipeline, outputs
        if backend is not None:
            self.state.info["backend"] = backend
        self._controls = RunControls(self.state, pipeline, outputs)

    def update(self, result) -> None:
        """On the output thread, after `outputs.write(result)`: hand over the frame and the new events."""
        if result.frame is not None:
            self.slot.put(result.frame.image, result.cells, result.fps)
        if self._outputs.written:
            self.state.add_events(self._outputs.written)

    def done(self, report: dict) -> None:
        """The report is written: the page shows it; the stream ends."""
        self.slot.close()
        self.state.finish(report)

    def _figures(self) -> dict:
        pipeline, outputs = self._pipeline, self._outputs
        if pipeline is None or self.state.finished:
            return {}
        stages = {k: v["p50"] for k, v in pipeline.times.summary().items()}
        return {"frames": pipeline.frames, "fps": round(pipeline.recent_fps, 2), "stages_ms": stages,
                "uncounted": outputs.uncounted}  # fmt: skip

    # -- Controls, for the page's buttons ---------------------------------------------------------
    def _live(self) -> RunControls:
        if self._controls is None:
            raise Conflict("the run is starting")
        return self._controls

    def pause(self) -> None:
        self._live().pause()

    def resume(self) -> None:
        self._live().resume()

    def finish(self) -> None:
        self._live().finish()

    def explain(self, event_id: int) -> str:
        if self.state.finished or self._controls is None:
            return FinishedControls(self.state).explain(event_id)
        return self._controls.explain(event_id)


class RunView(_Page):
    """`sperm-edge view RUN_DIR`: the page over a finished run (report, gallery, explanations), no stream."""

    def __init__(self, run_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 token: str | None = None) -> None:  # fmt: skip
        self.host, self.token = host, token
        self.state = load_run(run_dir)
        self._server = ViewServer(build_app(self.state, FinishedControls(self.state), None, 1.0, token), host, port)
