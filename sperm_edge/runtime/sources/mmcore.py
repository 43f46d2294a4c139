"""`mmcore://CONFIG.cfg` and `mmcore://demo`: cameras through Micro-Manager's core (pymmcore-plus).

`mmcore://demo` loads Micro-Manager's DemoCamera from the `mm-test-adapters` package (no download at
run time: the tests use it); a configuration file loads the camera it defines, with the device adapters
found by pymmcore-plus (`mmcore install`, or MICROMANAGER_PATH). Each source has its own core, in
continuous sequence acquisition; frames come from the core's circular buffer with their metadata
(`ImageNumber`, `ElapsedTime-ms`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sperm_edge.errors import SpermEdgeError
from sperm_edge.runtime.sources.camera import CameraCapture, CameraOptions, CameraRecord, to_bgr
from sperm_edge.runtime.sources.uri import SourceURI

INSTALL = "pip install 'sperm-edge[micromanager]' (pymmcore-plus, and mm-test-adapters for mmcore://demo)"
DEMO_CONFIG = "MMConfig_demo.cfg"
POLL_S = 0.002


def _core_class():
    try:
        from pymmcore_plus import CMMCorePlus
    except ImportError:
        raise SpermEdgeError(f"mmcore:// sources need pymmcore-plus: {INSTALL}") from None
    return CMMCorePlus


def _demo_adapters() -> Path:
    try:
        import mm_test_adapters
    except ImportError:
        raise SpermEdgeError(f"mmcore://demo needs Micro-Manager's test adapters: {INSTALL}") from None
    return Path(mm_test_adapters.device_adapter_path())


def list_mmcore() -> list[dict]:
    """The demo camera when its adapters are installed ([] otherwise): a configuration names any other camera."""
    try:
        _core_class()
        path = _demo_adapters()
    except SpermEdgeError:
        return []
    return [{"sdk": "micromanager", "model": "DemoCamera", "serial": None, "uri": "mmcore://demo",
             "adapters": str(path), "demo": True}]  # fmt: skip


def _adapter_paths(config: Path) -> list[str]:
    """Where a configuration's device adapters are: MICROMANAGER_PATH, else what pymmcore-plus installed."""
    if os.environ.get("MICROMANAGER_PATH"):
        return [os.environ["MICROMANAGER_PATH"]]
    from pymmcore_plus import find_micromanager

    found = find_micromanager()
    if not found:
        raise SpermEdgeError(f"no Micro-Manager device adapters for {config}: run `mmcore install` (pymmcore-plus) "
                             "or set MICROMANAGER_PATH to a Micro-Manager installation")  # fmt: skip
    return [found]


def _set_property(core, camera: str, name: str, prop: str, value) -> None:
    if not core.hasProperty(camera, prop):
        raise SpermEdgeError(f"this camera has no {name} setting (no {prop!r} property on {camera})")
    try:
        core.setProperty(camera, prop, value)
    except Exception as err:  # pymmcore raises its own CMMError
        allowed = core.getAllowedPropertyValues(camera, prop)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        raise SpermEdgeError(f"the camera refused {name}={value}{hint}: {str(err).splitlines()[0]}") from None


def _read_back(core, camera: str) -> dict:
    settings = {"exposure_us": round(core.getExposure() * 1000.0, 3), "bit_depth": core.getImageBitDepth(),
                "width": core.getImageWidth(), "height": core.getImageHeight()}  # fmt: skip
    for key, prop in (("gain_db", "Gain"), ("pixel_format", "PixelType"), ("binning", "Binning")):
        if core.hasProperty(camera, prop):
            settings[key] = core.getProperty(camera, prop)
    x, y, w, h = core.getROI()
    settings["roi"] = [x, y, w, h]
    return settings


class MMCoreCapture(CameraCapture):
    def __init__(self, core, record: CameraRecord, give_up: float) -> None:
        self.core = core
        self.bits = core.getImageBitDepth()
        self.components = core.getNumberOfComponents()
        exposure_ms = core.getExposure()
        super().__init__(record, give_up, 1000.0 / exposure_ms if exposure_ms > 0 else None)
        core.startContinuousSequenceAcquisition(0)

    def _grab(self):
        core = self.core
        deadline = time.monotonic() + 0.5
        while core.getRemainingImageCount() == 0:
            if time.monotonic() > deadline or not self._open:
                self.record.grab_timeouts += 1
                return None
            if not core.isSequenceRunning():  # the camera stopped acquiring: the source reopens it
                self._open = False
                return None
            time.sleep(POLL_S)
        try:
            image, metadata = core.popNextImageAndMD()
        except Exception:  # emptied by another reader of the core meanwhile: a wait like any other
            self.record.grab_timeouts += 1
            return None
        fmt = "BGRA8" if self.components == 4 else "Mono"
        meta = {}
        if (number := metadata.get("ImageNumber")) not in (None, ""):
            meta["camera_frame_id"] = int(number)
        if (elapsed := metadata.get("ElapsedTime-ms")) not in (None, ""):
            meta["camera_timestamp"] = float(elapsed)
        if core.isBufferOverflowed():
            self.record.failed_buffers += 1  # frames lost in the core's circular buffer
        return to_bgr(image, fmt, self.bits), meta

    def _close(self) -> None:
        try:
            self.core.stopSequenceAcquisition()
            self.core.unloadAllDevices()
        except Exception:  # a device that failed mid-run may refuse to stop; it is unloaded with its core
            pass


def open_mmcore(uri: SourceURI, options: CameraOptions, record: CameraRecord, give_up: float) -> MMCoreCapture:
    """Load the configuration (or the demo), apply `options` to its camera, start the acquisition."""
    core = _core_class()()
    if uri.location.lower() == "demo":
        adapters = _demo_adapters()
        config = adapters / DEMO_CONFIG
        core.setDeviceAdapterSearchPaths([str(adapters)])
    else:
        config = Path(uri.location).expanduser()
        if not config.is_file():
            raise SpermEdgeError(f"Micro-Manager configuration not found: {config}")
        core.setDeviceAdapterSearchPaths(_adapter_paths(config))
    try:
        core.loadSystemConfiguration(str(config))
    except Exception as err:  # CMMError, or an OSError from a missing adapter library
        raise SpermEdgeError(f"cannot load Micro-Manager configuration {config}: {str(err).splitlines()[0]}") from None
    camera = core.getCameraDevice()
    if not camera:
        core.unloadAllDevices()
        raise SpermEdgeError(f"the Micro-Manager configuration {config} defines no camera")
    try:
        if options.pixel_format:
            _set_property(core, camera, "pixel_format", "PixelType", options.pixel_format)
        if options.gain_db is not None:
            _set_property(core, camera, "gain_db", "Gain", options.gain_db)
        if options.exposure_us is not None:
            core.setExposure(options.exposure_us / 1000.0)
        if options.roi:
            core.setROI(*options.roi)
        if options.fps is not None:
            raise SpermEdgeError("Micro-Manager cameras take no frame rate: set the exposure (exposure_us) instead")
        record.model = f"{core.getDeviceLibrary(camera)} {core.getDeviceDescription(camera)}".strip()
        record.serial = core.getProperty(camera, "CameraID") if core.hasProperty(camera, "CameraID") else None
        record.settings = _read_back(core, camera)
        return MMCoreCapture(core, record, give_up)
    except BaseException:
        core.unloadAllDevices()
        raise
