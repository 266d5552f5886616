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

from convlstm_conformance.certify import level_reasons

TEMPLATE_DIR = Path(__file__).parent / "templates"


def render(certificate: dict) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    levels = [dict(lv, reasons=level_reasons(lv, listed=20)) for lv in certificate["levels"]]
    return env.get_template("certificate.html.j2").render(c=dict(certificate, levels=levels))


def build(certificate: dict, out: Path) -> Path:
    out = Path(out)
    out.write_text(render(certificate), encoding="utf-8")
    return out


def index(directory: Path) -> Path:
    """``index.md`` of the certificates (``*.json``) in ``directory``: one row
    per implementation, what each one's failures are, then ``findings.md``."""
    import json
    directory = Path(directory)
    certs = []
    for path in sorted(directory.glob("*.json")):
        cert = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(cert, dict) and cert.get("certificate_schema"):
            certs.append((path, cert))
    lines = ["# Certificates", "",
             "Written by `convlstm-conformance certify` (the command is in each certificate); "
             "this page by `python -m convlstm_conformance.reports.certificate DIR`.", "",
             "| implementation | versions | level | met | failed | waived | not claimed | "
             "not judged | profile | date |", "| --- " * 10 + "|"]
    for path, c in certs:
        impl, s = c["implementation"], c["summary"]
        versions = ", ".join(f"{k} {v}" for k, v in (impl.get("versions") or {}).items())
        lines.append(f"| [{_md(impl['name'])}]({path.name}) | {_md(versions)} | "
                     f"{c['level'] or 'none'} | {s['met']} | {s['failed']} | {s['waived']} | "
                     f"{s['not claimed']} | {s['not judged']} | {c['suite']['profile']} | "
                     f"{(c['run'].get('started') or '')[:10]} |")
    for path, c in certs:
        lines += ["", f"## {_md(c['implementation']['name'])}", ""]
        for lv in c["levels"]:
            lines.append(f"- level {lv['id']}: " + ("met" if lv["met"] else
                                                    "not met (" + "; ".join(level_reasons(lv))
                                                    + ")"))
        for f in c["failures"]:
            first = (f["note"] or (f["message"].splitlines() or [""])[0])[:240]
            lines.append(f"- {f['verdict']} `{f['clause']}` ({f['test']}): {_md(first)}")
    notes = directory / "findings.md"     # what the certificates revealed, written by hand
    if notes.exists():
        lines += ["", notes.read_text(encoding="utf-8").rstrip()]
    out = directory / "index.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _md(text: str) -> str:
    """Text from a certificate, inert in a Markdown table."""
    return (str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace("`", "'").replace("\n", " "))


if __name__ == "__main__":
    import sys
    print(index(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/certificates")))
