"""Screenshot the live view during a run: `docs/live_view.png` in the README.

    python tools/live_view_screenshot.py BUNDLE CLIP [--out docs/live_view.png] [--fps 4] [--cells 40]

Runs `sperm-edge run BUNDLE --source CLIP --view ... --explain flagged` in its own process, opens
the page in Debian's headless chromium (Playwright with `executable_path`), waits until `--cells`
cells are counted and some flagged cells carry their Grad-CAM++ heatmaps, takes the picture,
then presses Finish and waits for the report.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _live import free_port, get_json, start_run, wait_ready

from sperm_edge.io import atomic_write_bytes

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def wait_status(port: int, check, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = get_json(port, "/api/status")
        if status is not None and check(status):
            return status
        time.sleep(0.3)
    raise RuntimeError(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/live_view.png"))
    parser.add_argument("--fps", default="4", help="Replay rate of the clip (frames per second).")
    parser.add_argument("--cells", type=int, default=40, help="Cells counted before the picture.")
    parser.add_argument("--explained", type=int, default=6, help="Flagged cells with heatmaps before the picture.")
    parser.add_argument("--size", default="1440x1000", help="Browser viewport WIDTHxHEIGHT.")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    width, height = (int(v) for v in args.size.split("x"))
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        extra = ["--fps", args.fps, "--explain", "flagged", "--view", f"127.0.0.1:{port}", "--view-linger", "0"]
        proc = start_run(args.bundle, args.clip, run_dir, *extra, log=Path(scratch) / "run.log")
        try:
            wait_ready(proc, port)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
                page.goto(f"http://127.0.0.1:{port}/")
                wait_status(port, lambda s: s["cells"] >= args.cells and len(s["explained"]) >= args.explained,
                            args.timeout, f"{args.cells} cells and {args.explained} heatmaps")  # fmt: skip
                page.wait_for_function("() => document.querySelectorAll('.cell.explained').length > 0")
                time.sleep(1.5)  # the last poll's images settle
                shot = page.screenshot()
                browser.close()
            atomic_write_bytes(args.out, shot)
            if proc.poll() is None:  # finish the sample, as the button does
                get_json(port, "/api/finish", method="POST")
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
