"""The report as one self-contained HTML page: Jinja2 template, markdown metadata through markdown-it, every image
inline as a base64 data URI, no external resource (fonts, scripts, styles all in the page)."""

from __future__ import annotations

import base64
from functools import lru_cache

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup

from kb_assets.report.build import Report

_STATUS_ORDER = {"failed": 0, "warning": 1, "planned": 2, "passed": 3}


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("kb_assets.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    # Raw HTML in metadata markdown is escaped (html=False); images may only be data URIs of pictures.
    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    environment.filters["markdown"] = lambda text: Markup(markdown.render(text))
    environment.filters["png_uri"] = lambda png: "data:image/png;base64," + base64.b64encode(png).decode()
    return environment


def render_html(report: Report) -> str:
    checks = sorted(report.checks, key=lambda c: (_STATUS_ORDER.get(c.status, 9), c.asset, c.check, c.partition or ""))
    counts = {status: sum(c.status == status for c in checks) for status in _STATUS_ORDER}
    return _environment().get_template("report.html.j2").render(report=report, checks=checks, check_counts=counts)
