"""HTML (one self-contained page, every value escaped) and PDF (fpdf2, pure Python) views of a compliance
report's JSON data."""

from __future__ import annotations

from typing import Any

import jinja2
from fpdf import FPDF
from fpdf.enums import XPos, YPos

PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#111}table{border-collapse:collapse;margin:0 0 1.5rem}
th,td{border:1px solid #bbb;padding:.25rem .6rem;text-align:left;vertical-align:top}td.n{text-align:right}
h2{margin-top:2rem}.meta{color:#444}
</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">Period {{ report.period["from"] }} to {{ report.period["to"] }} (end excluded);
generated {{ report.generated_at }} by {{ report.generator }}; schema {{ report.schema }}.</p>
{% for control in controls %}
<h2>{{ control.id }} &mdash; {{ control.title }}</h2>
{% for measure in control.measures %}
<table><caption>{{ measure.name }}</caption>
<tr><th scope="col">figure</th><th scope="col">value</th></tr>
{% for label, value in measure.rows %}<tr><td>{{ label }}</td><td class="n">{{ value }}</td></tr>
{% endfor %}</table>
{% endfor %}{% endfor %}
</body></html>
"""
)


def _text(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """A measure's figures as (label, value) lines; a mapping of counts gives one line per label."""
    lines: list[tuple[str, str]] = []
    for name, value in figures.items():
        if isinstance(value, dict):
            lines.extend((f"{name}: {label}", _text(count)) for label, count in value.items())
            if not value:
                lines.append((name, "none"))
        else:
            lines.append((name, _text(value)))
    return lines


def _sections(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": control["id"],
            "title": control["title"],
            "measures": [
                {"name": f"{report['measure_titles'][name]} ({name})", "rows": rows(report["measures"][name])}
                for name in control["measures"]
            ],
        }
        for control in report["controls"]
    ]


def _title(report: dict[str, Any]) -> str:
    return f"Compliance evidence: {report['framework_title']}"


def html(report: dict[str, Any]) -> bytes:
    """One HTML page without external resources; every string from the store or catalogue is escaped."""
    return PAGE.render(title=_title(report), report=report, controls=_sections(report)).encode()


def _latin(text: str) -> str:
    """The PDF's core fonts hold Latin-1 only: other characters become '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


def pdf(report: dict[str, Any]) -> bytes:
    """An A4 PDF: a heading per control and a two-column table per measure."""
    document = FPDF(format="A4")
    document.set_auto_page_break(auto=True, margin=15)
    document.set_title(_latin(_title(report)))
    document.set_creator(_latin(report["generator"]))
    document.add_page()
    document.set_font("Helvetica", "B", 15)
    document.multi_cell(0, 8, _latin(_title(report)), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    document.set_font("Helvetica", "", 9)
    period = report["period"]
    meta = f"Period {period['from']} to {period['to']} (end excluded); generated {report['generated_at']}"
    document.multi_cell(0, 5, _latin(meta), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for section in _sections(report):
        document.ln(3)
        document.set_font("Helvetica", "B", 11)
        heading = f"{section['id']} - {section['title']}"
        document.multi_cell(0, 6, _latin(heading), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        for measure in section["measures"]:
            document.set_font("Helvetica", "I", 9)
            document.cell(0, 5, _latin(measure["name"]), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            document.set_font("Helvetica", "", 9)
            with document.table(col_widths=(3, 1), text_align=("LEFT", "RIGHT"), first_row_as_headings=False) as t:
                for label, value in measure["rows"]:
                    t.row((_latin(label), _latin(value)))
    return bytes(document.output())
