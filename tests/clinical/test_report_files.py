"""`sperm-edge report RUN --pdf --fhir --csv` on real run folders: the PDF opens and says what the run found, the
FHIR bundle validates and carries report.json's numbers, the CSV has one row per counted cell."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sperm_edge.clinical.who import category
from tests.conftest import run_cli
from tests.runtime.conftest import clip, tiny_bundle  # noqa: F401  (fixtures shared with the runtime tests)

SAMPLE = "S-0042"


@pytest.fixture(scope="module")
def clinical_run(tiny_bundle: Path, clip, tmp_path_factory) -> Path:  # noqa: F811
    """A finished run with flagged cells, their explanations, a sample id and an operator."""
    out = tmp_path_factory.mktemp("clinical") / "run"
    args = ["run", str(tiny_bundle), "--source", str(clip[0]), "--headless", "--explain", "flagged", "--out", str(out),
            "--sample-id", SAMPLE, "--operator", "A. Embryologist", "--backend", "ort-cpu"]  # fmt: skip
    assert run_cli(args) == 0
    return out


def pdf_text(path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler-utils is not installed (apt-get install poppler-utils)")
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def with_report(run: Path, tmp_path: Path, **changes) -> Path:
    """A copy of `run` whose report.json has `changes` (kept by `sperm-edge report`, which recounts only the cells)."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    report = json.loads((copy / "report.json").read_text())
    (copy / "report.json").write_text(json.dumps({**report, **changes}))
    return copy


def test_pdf_fhir_and_csv_carry_the_runs_numbers(clinical_run: Path, tmp_path: Path) -> None:
    run = with_report(clinical_run, tmp_path)
    assert run_cli(["report", str(run), "--pdf", "--fhir", "--csv"]) == 0
    report = json.loads((run / "report.json").read_text())
    lo, hi = report["ci95"]

    text = pdf_text(run / "report.pdf")
    assert SAMPLE in text and "A. Embryologist" in text and f"{report['percent_normal']:.1f}%" in text
    assert f"{lo:.1f}-{hi:.1f}%" in text and "not a certified medical device" in text
    assert f"Only {report['sperm_counted']} spermatozoa were assessed" in text  # a short clip: under 200
    assert report["run"]["bundle_sha256"] in text and "Appendix" in text
    pages = subprocess.run(["pdfinfo", str(run / "report.pdf")], capture_output=True, text=True, check=True).stdout
    n_pages = int(next(line.split()[-1] for line in pages.splitlines() if line.startswith("Pages:")))
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(run / "report.pdf"), str(tmp_path / "page")], check=True)
    rendered = sorted(tmp_path.glob("page*.png"))
    assert len(rendered) == n_pages >= 2 and all(p.stat().st_size > 5000 for p in rendered)

    from fhir.resources.R4B.bundle import Bundle

    bundle = Bundle.model_validate(json.loads((run / "report.fhir.json").read_text()))
    resources = {}
    for entry in bundle.entry:
        resources.setdefault(entry.resource.__resource_type__, []).append(entry.resource)
    diagnostic = resources["DiagnosticReport"][0]
    assert diagnostic.status == "preliminary" and len(diagnostic.result) == len(resources["Observation"])
    by_code = {o.code.coding[0].code if o.code.coding else o.code.text: o for o in resources["Observation"]}
    normal = by_code["10622-9"]
    assert float(normal.valueQuantity.value) == report["percent_normal"]
    assert [float(c.valueQuantity.value) for c in normal.component] == [lo, hi]
    assert float(by_code["10606-2"].valueQuantity.value) == pytest.approx(
        100.0 * report["counts"]["04_Amorphous"] / report["sperm_counted"], abs=0.01)  # fmt: skip
    per_class = by_code["Cells assessed per class by the model"]
    assert {c.code.coding[0].code: int(c.valueQuantity.value) for c in per_class.component} == report["counts"]
    assert resources["Device"][0].identifier[0].value == report["run"]["bundle_sha256"]
    assert resources["Specimen"][0].identifier[0].value == SAMPLE
    assert by_code["9704-8"].valueCodeableConcept.text.startswith(("teratozoospermia", "normal forms at or above"))

    with open(run / "cells.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == report["cells"] and {r["class"] for r in rows} <= set(report["counts"])
    assert sum(r["class"] == "01_Normal" for r in rows) == report["counts"]["01_Normal"]
    assert all(r["who_category"] == category(r["class"], "01_Normal") for r in rows)
    assert abs(sum(float(rows[0][f"p_{c}"]) for c in report["counts"]) - 1.0) < 1e-3


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"status": "aborted", "error": "OSError: [Errno 28] No space left on device"}, "The run was aborted"),
        (
            {
                "drift": {
                    "warning": True,
                    "score": 3.1,
                    "n": 20,
                    "validation_score": 1.0,
                    "p_value": 1e-5,
                    "share_out": 0.6,
                    "threshold": 2.0,
                }
            },
            "Drift warning",
        ),  # fmt: skip
    ],
)
def test_an_aborted_run_and_a_drift_warning_are_said_on_the_first_page(clinical_run, tmp_path, changes, said) -> None:
    run = with_report(clinical_run, tmp_path, **changes)
    assert run_cli(["report", str(run), "--pdf", "--fhir"]) == 0
    first_page = pdf_text(run / "report.pdf").split("\f")[0]
    assert said in first_page
    fhir = json.loads((run / "report.fhir.json").read_text())
    diagnostic = fhir["entry"][0]["resource"]
    assert said in diagnostic["conclusion"]
    assert diagnostic["status"] == ("partial" if changes.get("status") == "aborted" else "preliminary")


def test_a_run_with_no_cells_says_there_is_no_result(clinical_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "empty"
    run.mkdir()
    header = (clinical_run / "events.jsonl").read_text().splitlines()[0]
    (run / "events.jsonl").write_text(header + "\n")  # the run header, then nothing: no cell was found
    assert run_cli(["report", str(run), "--pdf", "--fhir", "--csv"]) == 0
    text = pdf_text(run / "report.pdf")
    assert "No normal-forms percentage" in text and "no spermatozoa were assessed" in text
    fhir = json.loads((run / "report.fhir.json").read_text())
    codes = [e["resource"].get("code", {}).get("coding", [{}])[0].get("code") for e in fhir["entry"]]
    assert "10622-9" not in codes and "9704-8" in codes  # no percentage to give, but the nominal result says why
    assert (run / "cells.csv").read_text().count("\n") == 1  # the header row only


def test_a_run_folder_without_a_log_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert run_cli(["report", str(tmp_path), "--pdf"]) == 2
    err = capsys.readouterr().err
    assert "has no events.jsonl" in err and "Traceback" not in err and not (tmp_path / "report.pdf").exists()


def test_classes_map_to_the_who_categories() -> None:
    assert [category(c, "01_Normal") for c in ("01_Normal", "02_Tapered", "03_Pyriform", "04_Amorphous")] == [
        "normal form", "head defect", "head defect", "head defect"]  # fmt: skip
    assert category("Normal_Sperm", "Normal_Sperm") == "normal form"
    assert category("Abnormal_Sperm", "Normal_Sperm").startswith("abnormal form (head, midpiece or tail")
    assert category("Non-Sperm", "Normal_Sperm").startswith("not a spermatozoon")
    assert category("Coiled_Tail", None) == "principal piece (tail) defect"
