"""The live view: a local web page over a running stream (`LiveView`) or a finished run (`RunView`).

One page (plain HTML, CSS and JavaScript shipped in `static/`, no CDN) shows the annotated
stream, the running tally with % normal forms and its 95% interval, the progress to the 200
cells the WHO manual asks for, FPS and stage times, and the flagged cells with their Grad-CAM++
explanations on a click; its buttons pause and resume counting and finish the sample.

- `security`  where to listen, tokens, the guard in front of every route
- `frames`    the one-slot hand-off of frames (newest wins) and the shared JPEG encoder
- `state`     what the page shows and what its buttons do
- `app`       the Starlette routes
- `server`    uvicorn in its own thread
- `live`      the two entry points

Starlette and uvicorn come with the `view` extra; the runtime imports none of this unless the
view is asked for.
"""

from sperm_edge.errors import SpermEdgeError

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as err:  # pragma: no cover - the dev install has the extra
    missing = f"the live view needs its extra ({err.name} is missing): pip install 'sperm-edge[view]'"
    raise SpermEdgeError(missing) from err

from sperm_edge.view.live import LiveView, RunView  # noqa: E402
from sperm_edge.view.security import announce, parse_bind, resolve_token  # noqa: E402

__all__ = ["LiveView", "RunView", "announce", "parse_bind", "resolve_token"]
