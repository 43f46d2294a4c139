"""The live view's web app (Starlette): one page, the MJPEG stream, a small JSON API and the run's own images.

    GET  /                      the page (HTML with its CSS and JavaScript inline: no CDN, works offline)
    GET  /stream.mjpg           annotated frames, multipart/x-mixed-replace JPEGs, at most `view_fps`
                                (503 beyond `max_streams` watchers)
    GET  /api/status            tally, figures and state (frames, fps, counts, cells, flagged, ...)
    GET  /api/events?since=ID   events counted after event ID (0 or absent: from the first)
    POST /api/explain/ID        queue the explanation of a flagged cell (404 for an unknown id)
    GET  /explanations/ID.png   its Grad-CAM++ panel, once made
    GET  /flagged/ID.png        its crop
    POST /api/pause | /api/resume | /api/finish
    GET  /report.pdf            the clinical report of a finished sample (409 before "Finish sample")

Everything else is 404; nothing is listed. `security.Guard` wraps the app (token, Host, origin).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time
from importlib import resources

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sperm_edge.errors import SpermEdgeError
from sperm_edge.runtime.flagging import FLAGGED_DIR
from sperm_edge.runtime.outputs import EXPLANATIONS_DIR
from sperm_edge.view.frames import JpegFrames
from sperm_edge.view.security import Guard
from sperm_edge.view.state import Conflict, Controls, RunState

BOUNDARY = "frame"
MAX_ID = 10**9
MAX_STREAMS = 8  # MJPEG clients at once: each holds a connection and a worker thread's turn for the run's length
NO_STORE = {"Cache-Control": "no-store"}


def _page() -> tuple[bytes, str]:
    """index.html with style.css and app.js inlined, and the CSP that allows exactly that script."""
    static = resources.files("sperm_edge.view") / "static"
    css, js = (static / "style.css").read_text(), (static / "app.js").read_text()
    html = (static / "index.html").read_text().replace("/*STYLE*/", css).replace("/*SCRIPT*/", js)
    digest = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    csp = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html.encode(), csp


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


def _event_id(request: Request) -> int | None:
    value = request.path_params["event_id"]
    return value if 0 < value < MAX_ID else None


def build_app(
    state: RunState,
    controls: Controls,
    frames: JpegFrames | None,
    view_fps: float,
    token: str | None,
    max_streams: int = MAX_STREAMS,
):
    """The ASGI app over one run: `frames` None serves no stream (a finished run); at most `max_streams` streams."""
    page, csp = _page()
    period = 1.0 / max(0.1, view_fps)

    async def index(request: Request) -> Response:
        headers = {**NO_STORE, "Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer"}  # fmt: skip
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    async def stream(request: Request) -> Response:
        if frames is None:
            return _error(404, "a finished run has no stream")
        if frames.clients >= max_streams:
            return _error(503, f"the view already serves {max_streams} streams: close one and reload")

        async def parts():
            version, due = 0, time.monotonic()
            frames.clients += 1
            try:
                while not frames.slot.closed:
                    got = await anyio.to_thread.run_sync(frames.next_after, version, 0.5)
                    if got is None:
                        continue
                    version, jpeg = got
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                    yield head.encode() + jpeg + b"\r\n"
                    due = max(due + period, time.monotonic())
                    await asyncio.sleep(due - time.monotonic())
            finally:
                frames.clients -= 1

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers=NO_STORE)  # fmt: skip

    async def status(request: Request) -> Response:
        body = state.status()
        if frames is not None:
            body["view"] = {"clients": frames.clients, "encoded": frames.encoded}
        return JSONResponse(body, headers=NO_STORE)

    async def events(request: Request) -> Response:
        since = request.query_params.get("since", "0")
        if not since.isdigit() or int(since) >= MAX_ID:
            return _error(400, "since must be an event id (0: from the first)")
        try:
            return JSONResponse(state.events_after(int(since)), headers=NO_STORE)
        except KeyError:
            return _error(404, f"no event {since} was counted")

    async def explain(request: Request) -> Response:
        event_id = _event_id(request)
        event = state.event(event_id) if event_id is not None else None
        if event is None:
            return _error(404, f"no event {request.path_params['event_id']} was counted")
        if not event.get("crop"):
            return _error(409, f"event {event_id} is not flagged: only flagged cells keep their crop")
        try:
            result = await anyio.to_thread.run_sync(controls.explain, event_id)
        except KeyError:
            return _error(409, f"event {event_id} kept no crop")
        return JSONResponse({"id": event_id, "state": result}, headers=NO_STORE)

    def image(folder: str):
        async def serve(request: Request) -> Response:
            event_id = _event_id(request)
            path = state.file(folder, event_id) if event_id is not None else None
            if path is None:
                return _error(404, "no such image")
            return FileResponse(path, media_type="image/png", headers=NO_STORE)

        return serve

    pdf_lock = threading.Lock()

    def write_pdf():
        """RUN/report.pdf from the finished run's report, written once (a second click serves the same file)."""
        from sperm_edge.clinical import load_record
        from sperm_edge.clinical.pdf import write_pdf as render

        path = state.out_dir / "report.pdf"
        with pdf_lock:
            report_json = state.out_dir / "report.json"
            if not path.is_file() or (report_json.is_file() and path.stat().st_mtime < report_json.stat().st_mtime):
                render(load_record(state.out_dir, state.report), path)
        return path

    async def report_pdf(request: Request) -> Response:
        if state.report is None:
            return _error(409, "the sample is not finished: press Finish sample, then open its report")
        try:
            path = await anyio.to_thread.run_sync(write_pdf)
        except (SpermEdgeError, OSError) as err:
            return _error(500, f"the PDF report could not be written: {err}")
        headers = {**NO_STORE, "Content-Disposition": 'inline; filename="report.pdf"'}
        return FileResponse(path, media_type="application/pdf", headers=headers)

    def action(name: str):
        async def act(request: Request) -> Response:
            try:
                getattr(controls, name)()
            except Conflict as err:
                return _error(409, str(err))
            return JSONResponse({"ok": True, "paused": state.paused, "finished": state.finished}, headers=NO_STORE)

        return act

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/stream.mjpg", stream, methods=["GET"]),
        Route("/api/status", status, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Route("/api/explain/{event_id:int}", explain, methods=["POST"]),
        Route("/explanations/{event_id:int}.png", image(EXPLANATIONS_DIR), methods=["GET"]),
        Route("/flagged/{event_id:int}.png", image(FLAGGED_DIR), methods=["GET"]),
        *(Route(f"/api/{name}", action(name), methods=["POST"]) for name in ("pause", "resume", "finish")),
        Route("/report.pdf", report_pdf, methods=["GET"]),
    ]
    return Guard(Starlette(routes=routes), token)
