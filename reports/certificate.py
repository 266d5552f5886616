"""Render a certificate (``convlstm-conformance certify``) as one self-contained HTML page.

Reached through the ``certificate`` entry point of the reporters group: the
core builds the certificate's JSON and does not import this package.  Every
string in a certificate may come from the implementation (its name, versions,
messages): it reaches the page only through jinja2 autoescaping, and a
waiver's link is an http(s) URL (the waiver loader refuses any other).
"""
from __future__ import annotations

from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).parent / "templates"


def render(certificate: dict) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("certificate.html.j2").render(c=certificate)


def build(certificate: dict, out: Path) -> Path:
    out = Path(out)
    out.write_text(render(certificate), encoding="utf-8")
    return out
