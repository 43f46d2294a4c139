"""`report.pdf`: the morphology report a laboratory reads and signs. A one-page summary, then the appendix.

Made with reportlab (its platypus layout engine): pure Python, so it installs on a Jetson and on any
PC without the system libraries (Pango, Cairo) that an HTML-to-PDF engine such as WeasyPrint needs,
and it draws tables and images directly.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    Image,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from sperm_edge.clinical.record import ClinicalRecord
from sperm_edge.clinical.who import MANUAL, NORMAL_FORMS_LIMIT, category, excluded, interpretation
from sperm_edge.io import atomic_path
from sperm_edge.runtime.drift import drift_message
from sperm_edge.runtime.report import WHO_MINIMUM

GALLERY_MAX = 48
GALLERY_COLUMNS = 4
DISCLAIMER = ("sperm-edge is a research tool, not a certified medical device. Its counts come from a neural network "
              "and must be reviewed by a qualified person before they are reported.")  # fmt: skip

_styles = getSampleStyleSheet()
BODY = _styles["BodyText"]
SMALL = ParagraphStyle("small", parent=BODY, fontSize=7.5, leading=9)
RESULT = ParagraphStyle("result", parent=BODY, fontSize=15, leading=19, spaceAfter=4)
H1, H2 = _styles["Title"], _styles["Heading2"]
GRID = TableStyle([
    ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
    ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.9, 0.92, 0.95)),
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ("FONTSIZE", (0, 0), (-1, -1), 8.5),
])  # fmt: skip
LIGHT_GRID = TableStyle([("GRID", (0, 0), (-1, -1), 0.3, colors.lightgrey), ("VALIGN", (0, 0), (-1, -1), "TOP")])


def _p(text: object, style: ParagraphStyle = BODY) -> Paragraph:
    return Paragraph(escape(str(text)), style)


def _pairs(rows: list[tuple[str, str]], style: TableStyle, label_width: float) -> Table:
    """A two-column table of labels and values, the values wrapped to the rest of the page's width."""
    table = Table([[_p(k, SMALL), _p(v, SMALL)] for k, v in rows], colWidths=[label_width, 178 * mm - label_width])
    table.setStyle(style)
    return table


def _value(value: object) -> str:
    return "-" if value in (None, "") else str(value)


def _identification(record: ClinicalRecord) -> Table:
    header, report, model = record.header, record.report, record.model
    status = report.get("status", "?") + (f": {report['error']}" if report.get("error") else "")
    rows = [
        ("Sample", _value(record.sample_id)),
        ("Date", _value(record.started)),
        ("Operator", _value(header.get("operator"))),
        ("Instrument", f"source {_value(header.get('source'))}, on {_value(header.get('host'))}"),
        ("Model", f"{_value(model.get('arch'))}, {_value(model.get('precision'))} on {_value(model.get('backend'))}"),
        ("Bundle", f"manifest SHA-256 {_value(model.get('bundle_sha256'))}"),
        ("Software", f"{_value(model.get('software'))}; run {_value(header.get('run_id'))}"),
        ("Run status", status),
    ]
    return _pairs(rows, LIGHT_GRID, 28 * mm)


def _result(report: dict) -> list:
    n = report.get("sperm_counted") or 0
    if report.get("percent_normal") is not None:
        lo, hi = report["ci95"]
        line = (f"<b>Normal forms: {report['percent_normal']:.1f}%</b> (95% Wilson interval {lo:.1f}-{hi:.1f}%) "
                f"of {n} spermatozoa assessed")  # fmt: skip
    else:
        line = f"<b>No normal-forms percentage</b> ({n} spermatozoa assessed)"
    limits = (f"WHO lower reference limit for normal forms: {NORMAL_FORMS_LIMIT:g}%. WHO asks for at least "
              f"{WHO_MINIMUM} spermatozoa assessed.")  # fmt: skip
    return [Paragraph(line, RESULT), _p(limits, SMALL), Spacer(1, 2 * mm),
            *(Paragraph(f"&bull; {escape(s)}", BODY) for s in interpretation(report))]  # fmt: skip


def _classes(report: dict) -> Table:
    counts, sperm = report.get("counts", {}), report.get("sperm_counted") or 0
    rows = [["Class", "WHO category", "Cells", "% of spermatozoa"]]
    for name, n in counts.items():
        share = "left out" if excluded(name) else (f"{100.0 * n / sperm:.1f}%" if sperm else "-")
        rows.append([_p(name, SMALL), _p(category(name, report.get("normal_class")), SMALL), str(n), share])
    rows.append(["All cells", "", str(report.get("cells", 0)), ""])
    table = Table(rows, colWidths=[40 * mm, 82 * mm, 20 * mm, 34 * mm], repeatRows=1)
    table.setStyle(GRID)
    return table


def _summary(record: ClinicalRecord) -> list:
    report = record.report
    drift = report.get("drift")
    explained = report.get("explanations") or {}
    flagged = f"{report.get('flagged', 0)} cells were flagged for review; the appendix shows them with the regions "
    flagged += f"that drove the model's answer ({explained.get('method', 'Grad-CAM++')})."
    if (explained.get("trust") or {}).get("verdict"):
        flagged += f" How far to trust these maps: {explained['trust']['verdict']}."
    return [
        _p("Sperm morphology report", H1), _identification(record), Spacer(1, 4 * mm), *_result(report),
        Spacer(1, 3 * mm), _classes(report), Spacer(1, 3 * mm), _p(flagged),
        _p(("Drift check: " if not (drift or {}).get("warning") else "Drift warning: ") + drift_message(drift)),
        Spacer(1, 4 * mm), _p(DISCLAIMER, SMALL), Spacer(1, 10 * mm),
        Table([["Reviewed by: __________________", "Signature: __________________", "Date: ____________"]],
              colWidths=[64 * mm, 64 * mm, 48 * mm]),
    ]  # fmt: skip


def _image(path: Path, width: float, height: float) -> Image | Paragraph:
    if not path.is_file():
        return _p("(image missing)", SMALL)
    return Image(str(path), width=width, height=height, kind="proportional")


def _gallery(record: ClinicalRecord) -> list:
    """The flagged cells: the explanation picture (the crop beside its heatmap overlay) where one was made,
    else the crop alone."""
    cells = record.report.get("flagged_cells") or []
    if not cells:
        return [_p("No cell was flagged.")]
    tiles = []
    for cell in cells[:GALLERY_MAX]:
        if cell.get("heatmap"):
            picture = _image(record.run_dir / cell["heatmap"], 40 * mm, 24 * mm)
        elif cell.get("crop"):
            picture = _image(record.run_dir / cell["crop"], 20 * mm, 20 * mm)
        else:
            picture = _p("(no image kept)", SMALL)
        reasons = ", ".join(cell.get("flag_reasons") or [])
        tiles.append([picture, _p(f"#{cell['id']} {cell['class']} {cell['confidence']:.2f}; {reasons}", SMALL)])
    rows = [tiles[i : i + GALLERY_COLUMNS] for i in range(0, len(tiles), GALLERY_COLUMNS)]
    rows[-1] += [""] * (GALLERY_COLUMNS - len(rows[-1]))
    grid = Table([[Table([[t[0]], [t[1]]]) if t else "" for t in row] for row in rows],
                 colWidths=[44 * mm] * GALLERY_COLUMNS)  # fmt: skip
    grid.setStyle(LIGHT_GRID)
    more = len(cells) - GALLERY_MAX
    note = [_p(f"{more} more flagged cells are listed in report.json and cells.csv.", SMALL)] if more > 0 else []
    method = (record.report.get("explanations") or {}).get("method", "Grad-CAM++")
    intro = _p(f"Each flagged cell: its crop and, where it was explained, its {method} map (where the network "
               "looked), with its id, class, confidence and the reasons it was flagged.", SMALL)  # fmt: skip
    return [intro, Spacer(1, 2 * mm), grid, *note]


def _metrics(scores: dict | None) -> str:
    if not scores:
        return "not recorded"
    parts = [f"accuracy {scores['accuracy']:.3f}" if scores.get("accuracy") is not None else None,
             f"macro-F1 {scores['macro_f1']:.3f}" if scores.get("macro_f1") is not None else None,
             f"expected calibration error {scores['ece']:.3f}" if scores.get("ece") is not None else None,
             f"after temperature scaling {scores['ece_calibrated']:.3f}" if scores.get("ece_calibrated") is not None
             else None, f"n = {scores['n']}" if scores.get("n") else None]  # fmt: skip
    return ", ".join(p for p in parts if p) or "not recorded"


def _model(record: ClinicalRecord) -> list:
    model = record.model
    rows = [
        ("Architecture", f"{_value(model.get('arch'))} (CBAM attention on an EfficientNet backbone)"),
        ("Precision, backend", f"{_value(model.get('precision'))}, {_value(model.get('backend'))}"),
        ("Bundle", f"{_value(model.get('bundle'))}; manifest SHA-256 {_value(model.get('bundle_sha256'))}"),
        ("Manifest", _value(model.get("manifest"))),
        ("Validation", _metrics(model.get("val_metrics"))),
        ("Test", _metrics(model.get("test_metrics"))),
        ("Exported model", _metrics(model.get("exported_accuracy"))),
        ("Temperature", _value(model.get("temperature"))),
    ]
    return [_pairs(rows, GRID, 32 * mm)]


def _run(record: ClinicalRecord) -> list:
    report = record.report
    reasons = ", ".join(f"{k} {v}" for k, v in (report.get("flag_reasons") or {}).items()) or "none"
    rows = [
        ("Frames", f"{report.get('frames', '-')} at {report.get('fps', 0) or 0:.1f} FPS, mode {report.get('mode')}"),
        ("Flag reasons", reasons),
        ("Set aside", _value((report.get("set_aside") or {}).get("cells"))),
        ("Images", _value(report.get("images"))),
        (
            "Report",
            f"written {_value(report.get('created'))}"
            + (f", rebuilt {report['rebuilt']}" if report.get("rebuilt") else ""),
        ),  # fmt: skip
    ]
    table = _pairs(rows, GRID, 32 * mm)
    method = (f"Method: every cell found in the microscope's fields is tracked and counted once; % normal forms = "
              f"normal / spermatozoa assessed (classes that are not spermatozoa left out), with Wilson's 95% score "
              f"interval. Reference limits: {MANUAL}.")  # fmt: skip
    return [table, Spacer(1, 3 * mm), _p(method, SMALL)]


def _footer(record: ClinicalRecord):
    sample = record.sample_id or "no sample id"

    def draw(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawString(15 * mm, 10 * mm, f"Sample {sample} - sperm-edge morphology report - page {doc.page}")
        canvas.drawRightString(A4[0] - 15 * mm, 10 * mm, "Research tool, not a certified medical device")
        canvas.restoreState()

    return draw


def write_pdf(record: ClinicalRecord, path: str | Path) -> Path:
    """Write the report as a PDF (temporary name, then renamed)."""
    path = Path(path)
    story = [*_summary(record), PageBreak(), _p("Appendix", H1), _p("A. Flagged cells", H2), *_gallery(record),
             KeepTogether([_p("B. The model", H2), *_model(record)]), KeepTogether([_p("C. The run", H2),
             *_run(record)])]  # fmt: skip
    with atomic_path(path) as tmp:
        doc = SimpleDocTemplate(str(tmp), pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=14 * mm,
                                bottomMargin=16 * mm, title=f"Sperm morphology report {record.sample_id or ''}".strip(),
                                author="sperm-edge", subject="Sperm morphology")  # fmt: skip
        footer = _footer(record)
        doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return path
