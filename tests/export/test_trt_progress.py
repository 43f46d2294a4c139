"""Engine-build progress lines from TensorRT's phase/step callbacks (called here as TensorRT documents)."""

from __future__ import annotations

import threading
import types

from sperm_edge.export.trt_progress import BuildProgress, attach


def test_top_level_phases_and_throttled_steps_are_reported() -> None:
    lines: list[str] = []
    progress = BuildProgress("TensorRT int8 build", every=0.0, emit=lines.append)
    progress.phase_start("Building engine", None, 3)
    progress.phase_start("Tactic timing", "Building engine", 2)
    assert progress.step_complete("Tactic timing", 0) is True
    progress.phase_finish("Tactic timing")
    progress.phase_finish("Building engine")
    assert lines[0].startswith("TensorRT int8 build: Building engine (3 steps) (")
    assert any("Tactic timing: step 1 of 2" in line for line in lines)
    assert lines[-1].startswith("TensorRT int8 build: Building engine done")
    assert not any("Tactic timing (2 steps)" in line for line in lines)  # nested phases: steps only

    quiet: list[str] = []
    slow = BuildProgress("b", every=3600, emit=quiet.append)
    slow.phase_start("p", None, 1000)
    threads = [threading.Thread(target=lambda i=i: slow.step_complete("p", i)) for i in range(50)]
    for thread in threads:  # TensorRT calls from several threads
        thread.start()
    for thread in threads:
        thread.join()
    assert len(quiet) == 1  # the phase start; steps within `every` seconds are not repeated


def test_attach_sets_the_monitor_where_tensorrt_has_one() -> None:
    class IProgressMonitor:  # TensorRT 10's interface: subclasses call its __init__
        def __init__(self) -> None:
            self.base_initialised = True

    config = types.SimpleNamespace()
    lines: list[str] = []
    monitor = attach(types.SimpleNamespace(IProgressMonitor=IProgressMonitor), config,
                     BuildProgress("x", every=0.0, emit=lines.append))  # fmt: skip
    assert config.progress_monitor is monitor and monitor.base_initialised
    monitor.phase_start("Building engine", None, 1)
    assert monitor.step_complete("Building engine", 0) is True and lines
    assert attach(types.SimpleNamespace(), types.SimpleNamespace(), BuildProgress("x")) is None  # TensorRT < 10
