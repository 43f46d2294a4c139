"""The camera SDK sources' entry points: the opener a `CaptureSource` uses for `pylon://` and `mmcore://`, and
the list of cameras the installed SDKs see. Each SDK is imported only when its scheme is used."""

from __future__ import annotations

from sperm_edge.runtime.sources.base import SourceOptions
from sperm_edge.runtime.sources.camera import CameraCapture, CameraOptions, CameraRecord
from sperm_edge.runtime.sources.uri import SourceURI


class CameraOpener:
    """The `Opener` of a camera SDK source: opens its camera (again, after a drop) and keeps one record across."""

    def __init__(self, uri: SourceURI) -> None:
        self.options = CameraOptions.parse(uri.query, uri.raw)  # a bad option fails before anything opens
        self.record = CameraRecord("pylon" if uri.scheme == "pylon" else "micromanager")

    def __call__(self, uri: SourceURI, source_options: SourceOptions) -> CameraCapture:
        if uri.scheme == "pylon":
            from sperm_edge.runtime.sources.pylon import open_pylon as open_camera
        else:
            from sperm_edge.runtime.sources.mmcore import open_mmcore as open_camera
        return open_camera(uri, self.options, self.record, give_up=source_options.stall_timeout)


def list_cameras() -> list[dict]:
    """Every camera the installed SDKs see (`sperm-edge doctor`)."""
    from sperm_edge.runtime.sources.mmcore import list_mmcore
    from sperm_edge.runtime.sources.pylon import list_pylon

    return [*list_pylon(), *list_mmcore()]
