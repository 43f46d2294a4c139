"""Faults: real `sperm-edge run` processes meeting what a clinic's machine throws at them; one row per fault.

    python benchmarks/faults.py [--bundle B] [--only NAME ...] [--out benchmarks/results]

Every row starts the CLI in its own process, on a looping synthetic field clip, and brings about one
real fault: a filesystem that fills up (a 1 MB tmpfs, when this process may mount one), a file-size
limit (RLIMIT_FSIZE: writes fail with EFBIG), SIGKILL, SIGTERM as `systemctl stop` sends it, Ctrl-C
twice, an engine call that never returns (the CLI started by a script that makes ONNX Runtime's tenth
call block forever, then SIGTERM), a stream server (ffmpeg) that dies for good, and hundreds of idle
connections against the live view of a run that may open only 256 files.

Then, for each: whether `report.json` was written at once, or had to be rebuilt by `sperm-edge
report RUN` (after space was freed, for the full filesystem); whether `events.jsonl` reads to its
last complete line with the run header first; the exit code; and the seconds from the signal or the
fault to the exit, against its deadline (the unit's TimeoutStopSec for stops, the reconnect schedule
for the stream). A row is `ok` when all of those hold and the exit code says what happened (non-zero
wherever the run could not finish). The siege row also times the run: its FPS with 500 idle
connections held against the FPS of the same run without them (alternating rounds, medians), which
must stay within 10%, and the view must answer requests that carry the token throughout.

Writes `faults.json` and `faults.md` (with the machine and load, `sperm_edge.bench.record`); exits 1
when a row is not ok. Without `--bundle` it builds the test suite's tiny bundle: these are faults of
the runtime, not of the network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _live import free_port, get_json, start_run, tiny_bundle, wait_ready  # noqa: E402

from sperm_edge.bench.record import BenchmarkRecord, load_line  # noqa: E402

TOKEN = "faults-benchmark-token-0123456789"
TIMEOUT_STOP_S = 30.0  # deploy/sperm-edge.service: TimeoutStopSec
SIEGE_CONNECTIONS = 500
SIEGE_OPEN_FILES = 256
FPS_KEPT_MIN = 0.90
FIELD_SIZE = (320, 240)

# Started as `python -c WEDGED MARKER run ...`: the CLI, with ONNX Runtime's tenth call blocking forever (a driver
# that hangs). MARKER is created when it blocks, so the benchmark knows when to send SIGTERM.
WEDGED = """
import sys, threading
from pathlib import Path
from sperm_edge.engines import OrtBackend
marker, calls, infer = Path(sys.argv[1]), [0], OrtBackend._infer_impl
def wedged(self, batch):
    calls[0] += 1
    if calls[0] == 10:
        marker.touch()
        threading.Event().wait()
    return infer(self, batch)
OrtBackend._infer_impl = wedged
from sperm_edge.cli import main
sys.argv = ["sperm-edge", *sys.argv[2:]]
main()
"""


@dataclass
class Fault:
    """One row: how the fault was made, and what the run must do about it."""

    name: str
    how: str
    may_finish: bool  # whether the run can end as it should (exit 0) despite the fault
    deadline_s: float | None = None
    exits: tuple[int, ...] | None = None  # the exit codes that say what happened, where more than one can
    row: dict = field(default_factory=dict)


class Run:
    """A started `sperm-edge run`, its folder and its log."""

    def __init__(self, proc: subprocess.Popen, out: Path, log: Path) -> None:
        self.proc, self.out, self.log = proc, out, log
        self.started = time.monotonic()

    def events(self) -> int:
        path = self.out / "events.jsonl"
        return path.read_bytes().count(b"\n") if path.is_file() else 0

    def wait_for(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the run exited ({self.proc.returncode}) before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.05)

    def exit(self, timeout: float = 120.0) -> tuple[int, float]:
        """The exit code, and the seconds from now until it came (the process is killed after `timeout`)."""
        start = time.monotonic()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, round(time.monotonic() - start, 2)

    def tail(self, n: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def said(self) -> str:
        """The run's last `error:` line (the CLI's one-line message), else its last line."""
        lines = [re.sub(r"\s+", " ", line).strip() for line in self.log.read_text(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        errors = [line for line in lines if line.startswith("error:") or "Error" in line]
        return (errors or lines or [""])[-1][:200]


def read_log(path: Path) -> dict:
    """What `events.jsonl` holds: complete lines that parse, lines that do not, a partial last line's bytes."""
    data = path.read_bytes() if path.is_file() else b""
    *lines, tail = data.split(b"\n")
    parsed, bad = [], 0
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            bad += 1
    header = bool(parsed) and parsed[0].get("type") == "run"
    return {"lines": len(parsed), "bad_lines": bad, "partial_tail_bytes": len(tail), "header": header,
            "intact": bool(parsed) and header and bad == 0}  # fmt: skip


def rebuild_report(out: Path) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "sperm_edge", "report", str(out)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"})  # fmt: skip
    return done.returncode, (done.stdout + done.stderr).strip()[-300:]


def outcome(fault: Fault, run: Run, code: int, stop_s: float | None, free_space: Callable[[], None] | None = None):
    """Fill `fault.row` from the finished run's folder (rebuilding the report where none was written)."""
    report_path = run.out / "report.json"
    written = report_path.is_file()
    report_how, rebuilt_said = "written at once", None
    if not written:
        if free_space is not None:
            free_space()
        rebuilt, rebuilt_said = rebuild_report(run.out)
        report_how = "rebuilt by sperm-edge report" if rebuilt == 0 and report_path.is_file() else "missing"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    log = read_log(run.out / "events.jsonl")
    exit_ok = code in fault.exits if fault.exits else (code == 0) == fault.may_finish
    in_time = stop_s is None or fault.deadline_s is None or stop_s <= fault.deadline_s
    fault.row.update({
        "fault": fault.name, "how": fault.how, "said": run.said(), "status": report.get("status"),
        "error": report.get("error"), "report": report_how, "rebuild_said": rebuilt_said,
        "cells": report.get("cells"), "frames": report.get("frames"), "events": log, "exit_code": code,
        "stop_s": stop_s, "deadline_s": fault.deadline_s,
        "ok": report_how != "missing" and log["intact"] and exit_ok and in_time,
    })  # fmt: skip
    return fault.row


# -- the faults -------------------------------------------------------------------------------------------------
def fresh(work: Path, name: str) -> tuple[Path, Path]:
    """WORK/NAME for a run's folder and WORK/NAME.log, with what an earlier use of `--work` left there removed
    (an old events.jsonl would look like this run's progress)."""
    out, log = work / name, work / f"{name}.log"
    shutil.rmtree(out, ignore_errors=True)
    log.unlink(missing_ok=True)
    return out, log


def _limit(kind: int, value: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(kind, (value, value))


def fault_file_size(bundle: Path, clip: Path, work: Path) -> dict:
    fault = Fault(
        "file size limit",
        "RLIMIT_FSIZE 64 KB: the first write past 64 KB (here a flagged cell's image) fails with EFBIG",
        False,
    )
    out, log = fresh(work, "fsize")
    proc = start_run(bundle, clip, out, "--mode", "crop", "--loop", log=log,
                     preexec_fn=_limit(resource.RLIMIT_FSIZE, 64 * 1024))  # fmt: skip
    run = Run(proc, out, log)
    code, _ = run.exit()
    return outcome(fault, run, code, None)


def fault_full_filesystem(bundle: Path, clip: Path, work: Path) -> dict:
    fault = Fault("full filesystem", "the run folder on a 1 MB tmpfs that fills up; then 8 MB (space freed) and "
                  "sperm-edge report", False)  # fmt: skip
    mount = work / "tiny-fs"
    mount.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                             text=True)  # fmt: skip
    if mounted.returncode != 0:
        return {"fault": fault.name, "how": fault.how, "skipped": f"cannot mount a tmpfs: {mounted.stderr.strip()}"}
    try:
        out = mount / "run"
        run = Run(start_run(bundle, clip, out, "--mode", "crop", "--loop", log=work / "tmpfs.log"), out,
                  work / "tmpfs.log")  # fmt: skip
        code, _ = run.exit()

        def free_space() -> None:
            subprocess.run(["mount", "-o", "remount,size=8m", str(mount)], check=True)

        row = outcome(fault, run, code, None, free_space)
        shutil.copytree(out, work / "tmpfs-run", dirs_exist_ok=True)
        return row
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _started(bundle: Path, clip: Path, work: Path, name: str, *extra: str, program: list[str] | None = None) -> Run:
    out, log = fresh(work, name)
    run = Run(start_run(bundle, clip, out, "--loop", *extra, log=log, program=program), out, log)
    run.wait_for(lambda: run.events() > 50, 120, "50 events")
    return run


def _signalled(fault: Fault, bundle: Path, clip: Path, work: Path, name: str, *signals: int) -> dict:
    """A run sent `signals` (10 ms apart) once 50 events are logged; its stop timed from the first signal."""
    run = _started(bundle, clip, work, name)
    start = time.monotonic()
    for i, sig in enumerate(signals):
        time.sleep(0.01 if i else 0.0)
        run.proc.send_signal(sig)
    code, _ = run.exit()
    return outcome(fault, run, code, round(time.monotonic() - start, 2))


def fault_sigkill(bundle: Path, clip: Path, work: Path) -> dict:
    fault = Fault("killed", "SIGKILL once 50 events are logged; then sperm-edge report", False)
    return _signalled(fault, bundle, clip, work, "sigkill", signal.SIGKILL)


def fault_sigterm(bundle: Path, clip: Path, work: Path) -> dict:
    fault = Fault("service stop", "SIGTERM (systemctl stop) once 50 events are logged", True, TIMEOUT_STOP_S)
    return _signalled(fault, bundle, clip, work, "sigterm", signal.SIGTERM)


def fault_double_ctrl_c(bundle: Path, clip: Path, work: Path) -> dict:
    fault = Fault("Ctrl-C twice", "SIGINT, and again 10 ms later, once 50 events are logged: a stop (exit 0), or an "
                  "interrupt (130) if the second lands while the first is finishing the frames read", True,
                  TIMEOUT_STOP_S, exits=(0, 130))  # fmt: skip
    return _signalled(fault, bundle, clip, work, "sigint", signal.SIGINT, signal.SIGINT)


def fault_wedged_engine(bundle: Path, clip: Path, work: Path) -> dict:
    fault = Fault("engine call never returns", "ONNX Runtime's 10th call blocks forever; SIGTERM 1 s later", False,
                  TIMEOUT_STOP_S)  # fmt: skip
    marker, (out, log) = work / "wedged.marker", fresh(work, "wedged")
    marker.unlink(missing_ok=True)
    program = [sys.executable, "-c", WEDGED, str(marker)]
    proc = start_run(bundle, clip, out, "--loop", "--backend", "ort-cpu", log=log, program=program)
    run = Run(proc, out, log)
    run.wait_for(marker.is_file, 120, "the engine call that blocks")
    time.sleep(1.0)
    run.proc.send_signal(signal.SIGTERM)
    code, stop_s = run.exit()
    return outcome(fault, run, code, stop_s)


def fault_stream_dies(bundle: Path, clip: Path, work: Path) -> dict:
    attempts, stall, interval = 3, 2.0, 1.0
    fault = Fault("stream server dies", f"ffmpeg's HTTP stream killed after 4 s for good; --reconnect-attempts "
                  f"{attempts} --stall-timeout {stall:g} --reconnect-interval {interval:g}", False,
                  attempts * (stall + interval) + 15)  # fmt: skip
    try:
        import pytest

        from tests.runtime._stream_server import StreamServer

        server = StreamServer().__enter__()
    except (ImportError, pytest.skip.Exception) as err:
        return {"fault": fault.name, "how": fault.how, "skipped": str(err)}
    try:
        out, log = fresh(work, "stream")
        schedule = ["--stall-timeout", str(stall), "--reconnect-attempts", str(attempts), "--reconnect-interval",
                    str(interval)]  # fmt: skip
        proc = start_run(bundle, server.url, out, "--mode", "crop", *schedule, log=log)
        run = Run(proc, out, log)
        run.wait_for(lambda: run.events() > 20, 60, "20 events from the stream")
        server.kill()
        code, stop_s = run.exit()
    finally:
        server.__exit__(None, None, None)
    row = outcome(fault, run, code, stop_s)
    row["ok"] = row["ok"] and code == 75  # EX_TEMPFAIL: the unit restarts it
    return row


# -- the siege --------------------------------------------------------------------------------------------------
class Siege:
    """`n` connections to `port` that never send a request, held from a process of their own (so the record sees
    their CPU as a neighbour's, not the run's). With `reopen`, each one the view closes is opened again at once: a
    flood of connections, not a crowd of idle ones."""

    def __init__(self, port: int, n: int, reopen: bool) -> None:
        self.port, self.n, self.reopen = port, n, reopen
        self.proc: subprocess.Popen | None = None
        self.done: dict = {}

    def __enter__(self) -> Siege:
        command = [sys.executable, __file__, "--siege-client", str(self.port), str(self.n)]
        self.proc = subprocess.Popen([*command, *(["--reopen"] if self.reopen else [])], stdout=subprocess.PIPE,
                                     text=True)  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        """End the client; `done` holds what it did: {"opened": ..., "closed_by_server": ...}."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.done = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


def siege_client(port: int, n: int, reopen: bool) -> None:
    """The client side of `Siege`, until SIGTERM; prints what it did as one JSON line. With `reopen` each socket
    also begins a request (one byte), so the kernel hands it to the view, which must close it in the end."""
    halt = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: halt.set())
    selector, counts = selectors.DefaultSelector(), {"opened": 0, "closed_by_server": 0}

    def open_one() -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))  # in progress; the kernel completes it
        selector.register(sock, selectors.EVENT_WRITE if reopen else selectors.EVENT_READ)
        counts["opened"] += 1

    def gone(sock: socket.socket) -> bool:
        try:
            return sock.recv(1) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    for _ in range(n):
        open_one()
    while not halt.is_set():
        for key, events in selector.select(timeout=0.2):
            sock = key.fileobj
            if events & selectors.EVENT_WRITE:  # connected: begin a request, then wait for the view to close it
                try:
                    sock.send(b"G")
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                except OSError:
                    pass  # refused or reset: gone
            elif not gone(sock):
                continue
            selector.unregister(sock)
            sock.close()
            counts["closed_by_server"] += 1
            if reopen and not halt.is_set():
                open_one()
    print(json.dumps(counts), flush=True)


def _open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def siege_round(bundle: Path, clip: Path, work: Path, name: str, siege: tuple[int, bool] | None, frames: int,
                record) -> dict:  # fmt: skip
    """One run with the view (token, 256 open files at most); `siege` (connections, reopen) held at it, or none."""
    port, (out, log) = free_port(), fresh(work, name)
    proc = start_run(bundle, clip, out, "--loop", "--max-frames", str(frames), "--view", f"127.0.0.1:{port}",
                     "--token", TOKEN, "--view-linger", "0", log=log,
                     preexec_fn=_limit(resource.RLIMIT_NOFILE, SIEGE_OPEN_FILES))  # fmt: skip
    run = Run(proc, out, log)
    wait_ready(proc, port, token=TOKEN)
    answers, latencies, peak_files = 0, [], 0
    attacker = Siege(port, *siege) if siege else None
    # the attacker ends (and is waited for) after the timing: until then its CPU counts as a neighbour's
    with attacker or nullcontext(), record.timing() as load:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run's CPU joins it once reaped (poll or wait)
        while proc.poll() is None:
            start = time.monotonic()
            try:
                answered = get_json(port, "/api/status", token=TOKEN, timeout=10.0) is not None
            except OSError:
                answered = False
            # the view closes with the run, just after its report is written: a request then is not refused
            if answered or not (out / "report.json").is_file():
                answers += answered
                latencies.append(time.monotonic() - start if answered else None)
            peak_files = max(peak_files, _open_files(proc.pid))
            time.sleep(0.5)
        code, _ = run.exit()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    done = attacker.done if attacker else {}
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    answered = [t for t in latencies if t is not None]
    return {
        "round": name, "siege": siege is not None, "exit_code": code, "status": report.get("status"),
        "frames": report.get("frames"), "fps": report.get("fps"), "requests": len(latencies), "answered": answers,
        "run_cpu_ms_per_frame": round(1000 * run_cpu / report["frames"], 2) if report.get("frames") else None,
        "slowest_answer_s": round(max(answered), 3) if answered else None, "peak_open_files": peak_files,
        "connections_opened": done.get("opened", 0), "closed_by_view": done.get("closed_by_server", 0),
        "too_many_open_files": "Too many open files" in run.log.read_text(errors="replace"), **load,
    }  # fmt: skip


SIEGES = {"alone": None, "idle": (SIEGE_CONNECTIONS, False), "flood": (SIEGE_CONNECTIONS, True)}


def fault_siege(bundle: Path, clip: Path, work: Path, record, rounds: int, frames: int) -> tuple[list, list]:
    """Rounds of the same run alone, with 500 idle connections, and with a flood of begun requests; two rows."""
    measured = []
    for i in range(rounds):
        for kind, siege in SIEGES.items():
            print(f"  round {i}: {kind}", flush=True)
            measured.append({"kind": kind, **siege_round(bundle, clip, work, f"siege-{i}-{kind}", siege, frames,
                                                         record)})  # fmt: skip
    alone = statistics.median(r["fps"] for r in measured if r["kind"] == "alone" and r["fps"])
    limits = f"a run limited to {SIEGE_OPEN_FILES} open files"
    faults = {
        "idle": Fault(f"{SIEGE_CONNECTIONS} idle connections", f"{SIEGE_CONNECTIONS} sockets that send nothing, "
                      f"opened at the live view of {limits} and held", True),
        "flood": Fault("begun-request flood", f"{SIEGE_CONNECTIONS} sockets that each send one byte of a request "
                       f"and no more, each one the view closes opened again at once, against {limits}", True),
    }  # fmt: skip
    rows = []
    for kind, fault in faults.items():
        besieged = [r for r in measured if r["kind"] == kind]
        held = statistics.median(r["fps"] for r in besieged if r["fps"])
        log = read_log(work / besieged[-1]["round"] / "events.jsonl")
        answered = sum(r["answered"] for r in besieged) / max(1, sum(r["requests"] for r in besieged))
        standing = all(r["exit_code"] == 0 and r["status"] == "complete" and not r["too_many_open_files"]
                       for r in besieged) and log["intact"]  # fmt: skip
        fault.row.update({
            "fault": fault.name, "how": fault.how, "status": besieged[-1]["status"], "report": "written at once"
            if besieged[-1]["status"] else "missing", "events": log, "exit_code": besieged[-1]["exit_code"],
            "stop_s": None, "deadline_s": None, "fps_alone": alone, "fps_besieged": held,
            "fps_kept": round(held / alone, 3), "view_answered": round(answered, 3), "said": "",
            # idle connections: the target (FPS within 10%, every request answered); a flood: still standing
            "ok": standing and (kind == "flood" or (held / alone >= FPS_KEPT_MIN and answered == 1.0)),
        })  # fmt: skip
        rows.append(fault.row)
    return rows, measured


# -- the record -------------------------------------------------------------------------------------------------
def render(result: dict) -> str:
    lines = ["# Faults: what a run does when its machine fails it", "", load_line(result), "",
             "Each row is a real `sperm-edge run` process (the tiny test bundle on a looping synthetic field clip) "
             "meeting one fault; `benchmarks/faults.py` says how each is made. *Report*: `report.json` written by "
             "the run itself, or rebuilt from `events.jsonl` by `sperm-edge report RUN`. *events.jsonl*: complete "
             "lines that parse (the run header first) and the bytes of a partial last line. *Stop*: seconds from "
             "the signal (or the stream's death) to the exit, against the deadline.", "",
             "| fault | how | status | report | events.jsonl | exit | stop s (deadline) | what the run said | ok |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in result["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['fault']} | {row['how']} | skipped: {row['skipped']} | | | | | | |")
            continue
        ev = row["events"]
        events = f"{ev['lines']} lines, {'intact' if ev['intact'] else 'NOT intact'}"
        events += f", {ev['partial_tail_bytes']} B partial tail" if ev["partial_tail_bytes"] else ""
        stop = "" if row["stop_s"] is None else f"{row['stop_s']:.1f}"
        stop += f" ({row['deadline_s']:g})" if row["deadline_s"] else ""
        said = row.get("said", "").replace("|", "/")
        if row.get("fps_kept") is not None:
            said = (f"FPS {row['fps_besieged']:.1f} vs {row['fps_alone']:.1f} alone ({100 * row['fps_kept']:.1f}%); "
                    f"the view answered {100 * row['view_answered']:.0f}% of requests with the token")  # fmt: skip
        lines.append(f"| {row['fault']} | {row['how']} | {row['status']} | {row['report']} | {events} | "
                     f"{row['exit_code']} | {stop} | {said} | {'yes' if row['ok'] else '**no**'} |")  # fmt: skip
    siege = result.get("siege_rounds") or []
    if siege:
        lines += ["", "## The view under siege, round by round", "",
                  f"Idle connections must leave the run at least {100 * FPS_KEPT_MIN:.0f}% of its FPS alone, and the "
                  "view answering (on Linux the kernel keeps connections that send nothing from the view: "
                  "TCP_DEFER_ACCEPT); a flood of begun requests (one byte each, every connection the view closes "
                  "reopened at once: the view must take each one) must not knock the run over. The attacker runs "
                  "on the same two cores: its CPU shows as "
                  "other processes' cores, and the run's own CPU per frame shows what the connections cost it.", "",
                  "| round | FPS | frames | run's CPU ms / frame | exit | requests answered | slowest answer s | "
                  "peak open files | connections opened | closed by the view | other processes' cores |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in siege:
            lines.append(f"| {r['round']} | {r['fps']} | {r['frames']} | {r['run_cpu_ms_per_frame']} | "
                         f"{r['exit_code']} | {r['answered']}/{r['requests']} | {r['slowest_answer_s']} | "
                         f"{r['peak_open_files']} | "
                         f"{r['connections_opened']} | {r['closed_by_view']} | {r.get('other_cpu')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


FAULTS = {
    "file_size": fault_file_size,
    "full_filesystem": fault_full_filesystem,
    "sigkill": fault_sigkill,
    "sigterm": fault_sigterm,
    "double_ctrl_c": fault_double_ctrl_c,
    "wedged_engine": fault_wedged_engine,
    "stream_dies": fault_stream_dies,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="Bundle to run (default: build the tiny test bundle).")
    parser.add_argument("--only", nargs="+", choices=[*FAULTS, "siege"], help="Run these rows only.")
    parser.add_argument("--siege-rounds", type=int, default=2, help="Alternating rounds alone and besieged.")
    parser.add_argument("--siege-frames", type=int, default=1500, help="Frames per siege round.")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, help="Scratch folder, kept (default: a temporary one).")
    parser.add_argument("--siege-client", nargs=2, type=int, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--reopen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.siege_client:  # the attacker's own process (`Siege`)
        siege_client(*args.siege_client, args.reopen)
        return 0
    record = BenchmarkRecord.start(argv)
    with tempfile.TemporaryDirectory(prefix="sperm-edge-faults-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bundle = args.bundle or tiny_bundle(work)
        from sperm_edge.data.synthetic import write_video

        clip = write_video(work / "field.mp4", frames=90, seed=3, size=FIELD_SIZE, fps=15.0, force=True)
        rows, siege = [], []
        for name in args.only or [*FAULTS, "siege"]:
            print(f"fault: {name}", flush=True)
            if name == "siege":
                new, siege = fault_siege(bundle, clip, work, record, args.siege_rounds, args.siege_frames)
            else:
                new = [FAULTS[name](bundle, clip, work)]
            for row in new:
                print(f"  {json.dumps({k: row.get(k) for k in ('status', 'report', 'exit_code', 'stop_s', 'ok')})}")
            rows += new
    ok = all(row.get("ok", True) for row in rows)
    settings = {"bundle": str(args.bundle or "tiny test bundle"), "field_clip": f"{FIELD_SIZE[0]}x{FIELD_SIZE[1]}"}
    record.write(args.out / "faults.json", rows, settings, render, ok=ok, siege_rounds=siege)
    print(f"written: {args.out / 'faults.json'}, faults.md; {'every row ok' if ok else 'a row is NOT ok'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
