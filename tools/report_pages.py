"""Render the clinical report's first two pages for the README: `docs/report_page1.png` and `docs/report_page2.png`.

    python tools/report_pages.py BUNDLE CLIP [--out docs] [--sample-id S-DEMO-1] [--operator "A. Embryologist"]

Runs `sperm-edge run BUNDLE --source CLIP --headless --explain flagged --sample-id ... --operator ...`
in a temporary folder, then `sperm-edge report RUN --pdf --fhir --csv`, then Debian's `pdftoppm`
(poppler-utils) on the PDF's first two pages.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sperm_edge(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sperm_edge", *args], cwd=REPO, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--sample-id", default="S-DEMO-1")
    parser.add_argument("--operator", default="A. Embryologist")
    parser.add_argument("--dpi", type=int, default=70)
    args = parser.parse_args()
    if shutil.which("pdftoppm") is None:
        raise SystemExit("pdftoppm not found: apt-get install poppler-utils")
    with tempfile.TemporaryDirectory(prefix="sperm-edge-report-") as tmp:
        run = Path(tmp) / "run"
        sperm_edge("run", str(args.bundle), "--source", str(args.clip), "--headless", "--explain", "flagged",
                   "--out", str(run), "--sample-id", args.sample_id, "--operator", args.operator)  # fmt: skip
        sperm_edge("report", str(run), "--pdf", "--fhir", "--csv")
        subprocess.run(["pdftoppm", "-r", str(args.dpi), "-png", "-f", "1", "-l", "2", str(run / "report.pdf"),
                        str(Path(tmp) / "page")], check=True)  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(sorted(Path(tmp).glob("page*.png")), start=1):
            shutil.copyfile(page, args.out / f"report_page{i}.png")
            print(f"written: {args.out / f'report_page{i}.png'}")


if __name__ == "__main__":
    main()
