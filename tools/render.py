"""Re-draw a result folder's bench.md, bench.csv and bench.png from its bench.json, machine.json and stream.json.

    python tools/render.py benchmarks/results/hushem

For report-format changes: the measured figures are read back, nothing is measured again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sperm_edge.bench.report import write_all


def main(folders: list[str]) -> None:
    for folder in map(Path, folders):
        rows = json.loads((folder / "bench.json").read_text())
        machine = json.loads((folder / "machine.json").read_text())
        stream_path = folder / "stream.json"
        stream = json.loads(stream_path.read_text()) if stream_path.is_file() else None
        for path in write_all(folder, rows, machine, stream):
            print(path)


if __name__ == "__main__":
    main(sys.argv[1:] or ["benchmarks/results/hushem"])
