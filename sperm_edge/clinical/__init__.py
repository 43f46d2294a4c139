"""The clinical report of a run folder: a PDF a laboratory signs, a FHIR R4 bundle for its information system,
and a CSV of the counted cells (`sperm-edge report RUN --pdf --fhir --csv`).

All three are written from the same `ClinicalRecord` (`record.py`): the run's report, its run header and
the identity of the model that produced it; `who.py` holds what the WHO manual says about the numbers.
"""

from sperm_edge.clinical.record import ClinicalRecord, load_record

__all__ = ["ClinicalRecord", "load_record"]
