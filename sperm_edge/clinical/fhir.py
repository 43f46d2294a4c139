"""The run as an HL7 FHIR R4 `Bundle` (type `collection`) for a laboratory information system.

It holds a `DiagnosticReport` whose results are `Observation`s coded with LOINC, the `Device` that
made them (the model, named by its bundle's manifest SHA-256) and the `Specimen` (the sample id).
Plain JSON is built here, so the runtime needs no FHIR library; the tests validate it with
`fhir.resources` (its R4B models: R4B changed none of the elements used here).

LOINC codes (loinc.org; names as in the LOINC table):
- 10622-9  Spermatozoa.normal/100 spermatozoa in Semen: the normal forms, a number fraction in %
- 10606-2  Spermatozoa.amorphous head/100 spermatozoa in Semen: the amorphous-head fraction, where the
           model has an amorphous class
- 9704-8   Spermatozoa [Morphology] in Semen: the nominal result, and the report's own code
LOINC has no code for tapered or pyriform heads, nor for a model's own classes: the cells per class
are components of one observation, coded in this project's code system (`CLASS_SYSTEM`).

The report's status is `preliminary` for a finished run (a model's result until a person signs it)
and `partial` for a run that was stopped or aborted. The 95% Wilson interval of the normal forms is
given as two components coded in this project's code system, and in words as a note.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from sperm_edge.clinical.record import ClinicalRecord
from sperm_edge.clinical.who import MANUAL, NORMAL_FORMS_LIMIT, excluded, interpretation, verdict
from sperm_edge.io import atomic_write_json

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CLASS_SYSTEM = "urn:sperm-edge:morphology-class"
STATISTIC_SYSTEM = "urn:sperm-edge:statistic"
BUNDLE_HASH_SYSTEM = "urn:sperm-edge:bundle-manifest-sha256"
SAMPLE_SYSTEM = "urn:sperm-edge:sample-id"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

NORMAL_FORMS = ("10622-9", "Spermatozoa Normal/100 spermatozoa in Semen")
AMORPHOUS_HEAD = ("10606-2", "Spermatozoa Amorphous Head/100 spermatozoa in Semen")
MORPHOLOGY = ("9704-8", "Spermatozoa [Morphology] in Semen")


def _loinc(code: tuple[str, str]) -> dict:
    return {"coding": [{"system": LOINC, "code": code[0], "display": code[1]}], "text": code[1]}


def _percent(value: float) -> dict:
    return {"value": round(float(value), 2), "unit": "%", "system": UCUM, "code": "%"}


def _id(run_id: str, name: str) -> str:
    """A stable id per resource of one run: the same run always gives the same bundle."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:sperm-edge:run:{run_id}:{name}"))


def fhir_bundle(record: ClinicalRecord) -> dict:
    """The FHIR R4 Bundle of the record (see the module docstring)."""
    report, header = record.report, record.header
    run_id = str(header.get("run_id") or record.run_dir.name)
    ids = {name: _id(run_id, name) for name in ("report", "device", "specimen", "normal", "amorphous", "nominal",
                                                 "classes", "bundle")}  # fmt: skip
    ref = {name: {"reference": f"urn:uuid:{value}"} for name, value in ids.items()}
    effective = header.get("started") or report.get("created")
    common = {"status": "preliminary",  # a model's result until a person signs the report
              "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory"}]}],
              "specimen": ref["specimen"], "device": ref["device"], "effectiveDateTime": effective}  # fmt: skip
    observations = {}
    if report.get("percent_normal") is not None:
        lo, hi = report["ci95"]
        below = report["percent_normal"] < NORMAL_FORMS_LIMIT
        observations["normal"] = {
            **common, "code": _loinc(NORMAL_FORMS), "valueQuantity": _percent(report["percent_normal"]),
            "interpretation": [{"coding": [{"system": INTERPRETATION_SYSTEM, "code": "L" if below else "N",
                                            "display": "Low" if below else "Normal"}]}],
            "referenceRange": [{"low": _percent(NORMAL_FORMS_LIMIT), "text": f"WHO lower reference limit, {MANUAL}"}],
            "component": [
                {"code": {"coding": [{"system": STATISTIC_SYSTEM, "code": f"ci95-{end}",
                                      "display": f"95% Wilson interval, {end} end"}]}, "valueQuantity": _percent(v)}
                for end, v in (("lower", lo), ("upper", hi))
            ],
            "note": [{"text": f"{report['sperm_counted']} spermatozoa assessed; 95% Wilson interval "
                              f"{lo:.1f}-{hi:.1f}%"}],
        }  # fmt: skip
        amorphous = [c for c in report.get("counts", {}) if "amorphous" in c.lower()]
        if amorphous and report.get("sperm_counted"):
            share = 100.0 * sum(report["counts"][c] for c in amorphous) / report["sperm_counted"]
            observations["amorphous"] = {**common, "code": _loinc(AMORPHOUS_HEAD), "valueQuantity": _percent(share)}
    observations["nominal"] = {**common, "code": _loinc(MORPHOLOGY), "valueCodeableConcept": {"text": verdict(report)}}
    counts = report.get("counts", {})
    observations["classes"] = {
        **common, "code": {"text": "Cells assessed per class by the model"},
        "valueQuantity": {"value": int(report.get("cells", 0)), "unit": "cells"},
        "component": [{"code": {"coding": [{"system": CLASS_SYSTEM, "code": name, "display": name}]},
                       "valueQuantity": {"value": int(n), "unit": "cells"}} for name, n in counts.items()],
    }  # fmt: skip
    if left_out := [c for c in counts if excluded(c)]:
        note = "not spermatozoa, left out of the percentage: " + ", ".join(left_out)
        observations["classes"]["note"] = [{"text": note}]
    diagnostic = {
        "resourceType": "DiagnosticReport", "id": ids["report"],
        "status": "preliminary" if report.get("status", "complete") == "complete" else "partial",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "LAB", "display": "Laboratory"}]}],
        "code": _loinc(MORPHOLOGY), "effectiveDateTime": effective, "issued": record.created,
        "specimen": [ref["specimen"]], "result": [ref[name] for name in observations],
        "conclusion": " ".join(interpretation(report)),
        "identifier": [{"system": "urn:sperm-edge:run-id", "value": run_id}],
    }  # fmt: skip
    if header.get("operator"):
        diagnostic["performer"] = [{"display": header["operator"]}]
    device = {
        "resourceType": "Device", "id": ids["device"],
        "identifier": [{"system": BUNDLE_HASH_SYSTEM, "value": str(header.get("bundle_sha256"))}],
        "deviceName": [{"name": f"sperm-edge {header.get('arch')} ({header.get('precision')})", "type": "model-name"}],
        "version": [{"value": str(header.get("software"))}],
        "note": [{"text": "Research software: not a certified medical device."}],
    }  # fmt: skip
    specimen = {"resourceType": "Specimen", "id": ids["specimen"], "type": {"text": "Semen"},
                "identifier": [{"system": SAMPLE_SYSTEM, "value": record.sample_id or "not given"}]}  # fmt: skip
    resources = [diagnostic, *({"resourceType": "Observation", "id": ids[name], **body}
                               for name, body in observations.items()), device, specimen]  # fmt: skip
    return {
        "resourceType": "Bundle", "id": ids["bundle"], "type": "collection", "timestamp": record.created,
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }  # fmt: skip


def write_fhir(record: ClinicalRecord, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_json(path, fhir_bundle(record))
    return path
