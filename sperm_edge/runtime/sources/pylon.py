"""`pylon://` and `pylon://SERIAL`: Basler cameras (USB3 Vision, GigE Vision) through Basler's pypylon.

Grabs one by one into a few buffers (`MaxNumBuffer`) with the camera running freely; the source's
grabber thread keeps only the newest frame, so the camera's own block ids show the frames the camera
or its link lost. With `PYLON_CAMEMU=1` set before the first use, pylon offers its camera emulator
("Emulation", serial 0815-0000), which the tests use.
"""

from __future__ import annotations

from sperm_edge.errors import SpermEdgeError
from sperm_edge.runtime.sources.camera import READ_TIMEOUT_MS, CameraCapture, CameraOptions, CameraRecord, to_bgr
from sperm_edge.runtime.sources.uri import SourceURI

BUFFERS = 8
INSTALL = "pip install 'sperm-edge[pylon]' (Basler's pypylon, which bundles the pylon runtime)"


def _pylon():
    try:
        from pypylon import genicam, pylon
    except ImportError:
        raise SpermEdgeError(f"pylon:// sources need pypylon: {INSTALL}") from None
    return pylon, genicam


def list_pylon() -> list[dict]:
    """The cameras pylon sees ([] when pypylon is not installed)."""
    try:
        pylon, _ = _pylon()
    except SpermEdgeError:
        return []
    devices = pylon.TlFactory.GetInstance().EnumerateDevices()
    return [{"sdk": "pylon", "model": d.GetModelName(), "serial": d.GetSerialNumber(), "class": d.GetDeviceClass(),
             "uri": f"pylon://{d.GetSerialNumber()}"} for d in devices]  # fmt: skip


def _node(camera, *names: str):
    """The first of `names` the camera has and can use (feature names differ between camera families)."""
    from pypylon import genicam

    nodemap = camera.GetNodeMap()
    for name in names:
        node = nodemap.GetNode(name)
        if node is not None and genicam.IsAvailable(node):
            return node
    return None


def _apply(camera, name: str, value, *features: str) -> None:
    from pypylon import genicam

    node = _node(camera, *features)
    if node is None:
        raise SpermEdgeError(f"this camera has no {name} setting (none of {', '.join(features)})")
    try:
        node.SetValue(value)
    except genicam.GenericException as err:
        detail = str(err).splitlines()[0]
        limits = f" (allowed {node.GetMin()} to {node.GetMax()})" if hasattr(node, "GetMin") else ""
        raise SpermEdgeError(f"the camera refused {name}={value}{limits}: {detail}") from None


def _read_back(camera) -> dict:
    settings = {}
    for key, features in (("exposure_us", ("ExposureTime", "ExposureTimeAbs")), ("gain_db", ("Gain", "GainAbs")),
                          ("gain_raw", ("GainRaw",)), ("pixel_format", ("PixelFormat",)),
                          ("fps", ("AcquisitionFrameRate", "AcquisitionFrameRateAbs")),
                          ("resulting_fps", ("ResultingFrameRate", "ResultingFrameRateAbs")),
                          ("width", ("Width",)), ("height", ("Height",)), ("offset_x", ("OffsetX",)),
                          ("offset_y", ("OffsetY",))):  # fmt: skip
        node = _node(camera, *features)
        if node is not None:
            try:
                settings[key] = node.GetValue()
            except Exception:  # a feature that is listed but not readable now
                continue
    return settings


class PylonCapture(CameraCapture):
    def __init__(self, camera, record: CameraRecord, give_up: float) -> None:
        self.camera = camera
        self.pixel_format = str(_read_back(camera).get("pixel_format", "Mono8"))
        fps = record.settings.get("resulting_fps") or record.settings.get("fps")
        super().__init__(record, give_up, fps)
        self._pylon, self._genicam = _pylon()
        camera.MaxNumBuffer.Value = BUFFERS
        camera.StartGrabbing(self._pylon.GrabStrategy_OneByOne)

    def _grab(self):
        try:
            result = self.camera.RetrieveResult(READ_TIMEOUT_MS, self._pylon.TimeoutHandling_Return)
        except self._genicam.GenericException:  # the camera went away: no frame, the source reopens it
            self._open = False
            return None
        if result is None or not result.IsValid():
            self.record.grab_timeouts += 1
            return None
        try:
            if not result.GrabSucceeded():
                self.record.failed_buffers += 1
                return None
            image = to_bgr(result.Array, self.pixel_format)
            meta = {"camera_frame_id": int(result.BlockID), "camera_timestamp": int(result.TimeStamp)}
        finally:
            result.Release()
        return image, meta

    def _close(self) -> None:
        try:
            self.camera.StopGrabbing()
            self.camera.Close()
        except Exception:  # a camera unplugged mid-run cannot be closed cleanly; it is gone either way
            pass


def open_pylon(uri: SourceURI, options: CameraOptions, record: CameraRecord, give_up: float) -> PylonCapture:
    """Open the first camera (or the one with `uri.location` as serial), apply `options`, start grabbing."""
    pylon, genicam = _pylon()
    factory = pylon.TlFactory.GetInstance()
    devices = factory.EnumerateDevices()
    if not devices:
        raise SpermEdgeError("no Basler camera found: pylon sees none (is it connected and powered, a GigE camera "
                             "on this computer's subnet?). For pylon's emulator, set PYLON_CAMEMU=1")  # fmt: skip
    serial = uri.location
    chosen = [d for d in devices if not serial or d.GetSerialNumber() == serial]
    if not chosen:
        seen = ", ".join(f"{d.GetModelName()} {d.GetSerialNumber()}" for d in devices)
        raise SpermEdgeError(f"no Basler camera with serial {serial} (pylon sees: {seen})")
    camera = pylon.InstantCamera(factory.CreateDevice(chosen[0]))
    try:
        camera.Open()
    except genicam.GenericException as err:
        raise SpermEdgeError(f"cannot open Basler camera {chosen[0].GetSerialNumber()}: {str(err).splitlines()[0]} "
                             "(is another program, such as pylon Viewer, using it?)") from None  # fmt: skip
    try:
        if options.pixel_format:
            _apply(camera, "pixel_format", options.pixel_format, "PixelFormat")
        if options.roi:
            x, y, w, h = options.roi
            for name, value, feature in (("offset_x", 0, "OffsetX"), ("offset_y", 0, "OffsetY"), ("width", w, "Width"),
                                         ("height", h, "Height"), ("offset_x", x, "OffsetX"),
                                         ("offset_y", y, "OffsetY")):  # fmt: skip
                _apply(camera, name, value, feature)
        if options.exposure_us is not None:
            _apply(camera, "exposure_us", float(options.exposure_us), "ExposureTime", "ExposureTimeAbs")
        if options.gain_db is not None:
            _apply(camera, "gain_db", float(options.gain_db), "Gain", "GainAbs")
        if options.fps is not None:
            _apply(camera, "fps", True, "AcquisitionFrameRateEnable")
            _apply(camera, "fps", float(options.fps), "AcquisitionFrameRate", "AcquisitionFrameRateAbs")
        info = camera.GetDeviceInfo()
        record.model, record.serial = info.GetModelName(), info.GetSerialNumber()
        record.settings = _read_back(camera)
        return PylonCapture(camera, record, give_up)
    except BaseException:
        camera.Close()
        raise
