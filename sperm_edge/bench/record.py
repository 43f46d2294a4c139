"""One record for every benchmark result: the rows, the machine, the load around each timing, the command, the commit.

    record = BenchmarkRecord.start()                 # load average and time before anything runs
    with record.timing() as load:                    # one timed piece: load before and after it
        fps = measure()
    rows.append({"fps": fps, **load})
    record.write(out / "field_speed.json", rows, settings={...}, markdown=render)

Timings taken while other jobs share the cores are off by up to 10x on these machines, so every
timed piece carries `load_before` and `load_after` (1-minute load averages) and `other_cpu`: the
cores that *other* processes kept busy while it ran (the machine's busy time from /proc/stat less
this process's own CPU time, per second of the piece). The load average counts the benchmark's own
threads too, so it cannot tell a neighbour from the work measured; `other_cpu` can. A record in
which other processes used more than `OTHER_CPU_LIMIT` of a core during any piece says so in
`under_load`: such a figure is not a headline. The JSON is written under a temporary name and
renamed (`io.atomic_write_json`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sperm_edge.bench.machine import describe_machine, load_average, machine_facts
from sperm_edge.hardware import cpu_facts
from sperm_edge.io import atomic_write_bytes, atomic_write_json


def git_commit(repo: Path | None = None) -> str | None:
    """The checked-out commit (with `-dirty` when the tree has changes), or None outside a git checkout."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


OTHER_CPU_LIMIT = 0.25  # cores other processes may keep busy during a timed piece before it is marked under load


def _busy_seconds() -> float | None:
    """CPU seconds all processors spent busy since boot (/proc/stat), or None where there is no /proc."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _one_minute_load() -> float | None:
    load = load_average()
    return load[0] if load else None


@dataclass
class BenchmarkRecord:
    """What a benchmark script records beside its rows (see the module docstring)."""

    command: str
    commit: str | None
    started: float
    load_before: list[float] | None
    cores: int
    peak_load: float = 0.0
    peak_other_cpu: float = 0.0

    @classmethod
    def start(cls, argv: list[str] | None = None) -> BenchmarkRecord:
        argv = sys.argv if argv is None else argv
        command = shlex.join([Path(sys.executable).name, *argv])
        load = load_average()
        cores = int(cpu_facts()["usable_cpus"])
        return cls(command, git_commit(), time.time(), load, cores, peak_load=load[0] if load else 0.0)

    @contextmanager
    def timing(self) -> Iterator[dict]:
        """Around one timed piece: yields a dict that holds `load_before` now, and `load_after` and `other_cpu`
        (cores busy with other processes) once it ends."""
        load = {"load_before": _one_minute_load()}
        start, busy, own = time.monotonic(), _busy_seconds(), _own_seconds()
        try:
            yield load
        finally:
            load["load_after"] = _one_minute_load()
            elapsed, busy_now = time.monotonic() - start, _busy_seconds()
            if busy is not None and busy_now is not None and elapsed > 0:
                other = max(0.0, (busy_now - busy) - (_own_seconds() - own)) / elapsed
                load["other_cpu"] = round(other, 3)
                self.peak_other_cpu = max(self.peak_other_cpu, other)
            self.peak_load = max(self.peak_load, *(v for v in load.values() if v is not None))

    @property
    def under_load(self) -> bool:
        """Whether other processes kept more than `OTHER_CPU_LIMIT` of a core busy during a timed piece."""
        return self.peak_other_cpu > OTHER_CPU_LIMIT

    def write(
        self,
        path: Path,
        rows: list[dict],
        settings: dict | None = None,
        markdown: Callable[[dict], str] | None = None,
        **extra: object,
    ) -> dict:
        """Write `path` (JSON) and, with `markdown`, its `.md` beside it; returns the record as written."""
        facts = machine_facts(threads=self.cores)
        result = {
            "command": self.command,
            "commit": self.commit,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "elapsed_s": round(time.time() - self.started, 1),
            "machine": describe_machine(facts),
            "cpu": facts["cpu"],
            "load_before": self.load_before,
            "load_after": load_average(),
            "peak_load": round(self.peak_load, 2),
            "peak_other_cpu": round(self.peak_other_cpu, 3),
            "cores": self.cores,
            "under_load": self.under_load,
            "settings": settings or {},
            **extra,
            "rows": rows,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, result)
        if markdown is not None:
            atomic_write_bytes(path.with_suffix(".md"), markdown(result).encode())
        return result


def load_line(result: dict) -> str:
    """The line every rendered result starts with: machine, load, command, commit; a warning when under load."""
    line = (
        f"Command: `{result['command']}` at commit `{result['commit']}`, {result['created']}. Machine: "
        f"{result['machine']}; load average before {result['load_before']}, after {result['load_after']}, "
        f"highest 1-minute load {result['peak_load']} on {result['cores']} cores (the benchmark's own threads "
        f"included); other processes kept at most {result['peak_other_cpu']} cores busy during a timing."
    )
    if result["under_load"]:
        line += " **Taken while other processes used the cores: not a headline figure.**"
    return line


def replace_section(path: Path, start: str, end: str, body: str) -> None:
    """Replace what lies between the marker lines `start` and `end` of `path` (a README) with `body`, atomically."""
    text = path.read_text()
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"{path} has no generated section ({start} ... {end})")
    atomic_write_bytes(path, (text[: i + len(start)] + "\n" + body.rstrip("\n") + "\n" + text[j:]).encode())
