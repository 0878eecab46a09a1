"""One self-contained HTML page: inline CSS, images as data URIs, no scripts, nothing fetched.

A Content-Security-Policy forbids every network load, so a page that asked for one would say so in
the browser's console instead of quietly fetching it.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path

from bench.report.tables import Table

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24;
       margin: 2rem auto; max-width: 1200px; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
p.sub, caption, .note { color: #57606a; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align: left; font-size: 12px; padding-top: 0.3rem; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.n { text-align: right; white-space: nowrap; }
table.env td { text-align: left; }
tr.noisy td, tr.imprecise td, tr.busy td, tr.throttled td { background: #fff8c5; }
tr.bad td { background: #ffebe9; }
tr.pitfall td { background: #fbefff; }
tr.muted td { color: #8c959f; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { font-size: 12px; color: #57606a; max-width: 60rem; }
nav a { margin-right: 1rem; }
"""

# Numbers, durations, percentages, speedups and the "no value" dash are right-aligned, with what
# bench.report.tables adds to them: a rank's "=", "±3.0%", "[6.52, 7.38]", "~1x", "(untested)".
_NUMBER = r"[-+]?(\d[\d,.]*(e[-+]?\d+)?|inf)( ?(ns|µs|ms|s|%|x))?"
NUMERIC = re.compile(rf"^([=~]?{_NUMBER}( (±{_NUMBER}|\[{_NUMBER}, {_NUMBER}\]|\(untested\)))?|—)$")

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class Plot:
    title: str
    path: Path
    caption: str = ""


@dataclass
class Section:
    title: str
    anchor: str
    tables: list[Table]
    plots: list[Plot]
    notes: list[str]


def table_html(table: Table, css_class: str = "", heading: bool = True) -> str:
    parts = [f"<h3>{escape(table.title)}</h3>"] if heading else []
    parts.append(f'<table class="{escape(css_class)}">')
    if table.caption:
        parts.append(f"<caption>{escape(table.caption)}</caption>")
    if any(table.header):
        parts.append(
            "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in table.header) + "</tr></thead>"
        )
    parts.append("<tbody>")
    classes = table.row_classes or [""] * len(table.rows)
    for row, css in zip(table.rows, classes, strict=False):
        attr = f' class="{escape(css)}"' if css else ""
        cells = "".join(
            f'<td class="n">{escape(c)}</td>' if NUMERIC.match(c) else f"<td>{escape(c)}</td>"
            for c in row
        )
        parts.append(f"<tr{attr}>{cells}</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def image_html(plot: Plot) -> str:
    encoded = base64.b64encode(plot.path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{escape(plot.title)}">'
        f"<figcaption><b>{escape(plot.title)}.</b> {escape(plot.caption)}</figcaption></figure>"
    )


def page(title: str, subtitle: str, environment: Table, sections: list[Section]) -> str:
    """The whole page: environment first, then each section's notes, tables and plots."""
    nav = " ".join(f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in sections)
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">{escape(subtitle)}</p>',
        f"<nav>{nav}</nav>",
        '<h2 id="environment">Environment</h2>',
        table_html(environment, "env", heading=False),
    ]
    for section in sections:
        body.append(f'<h2 id="{escape(section.anchor)}">{escape(section.title)}</h2>')
        body += [f'<p class="note">{escape(note)}</p>' for note in section.notes]
        body += [table_html(t) for t in section.tables]
        body += [image_html(p) for p in section.plots]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
