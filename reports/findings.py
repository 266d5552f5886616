"""The findings section: a campaign's findings.json as HTML.

    python -m convlstm_conformance.reports.findings CAMPAIGN_DIR   # writes CAMPAIGN_DIR/findings.html

One entry per finding (core/findings.py): its status (new, known: an
expectation entry explains it, fixed: the corpus replay no longer fails),
the implementation, the clauses it was seen through, the triage in words
and its pieces, the necessary conditions as a spec expression, the versions
and the standalone reproduction.  Every string comes from records and
adapters, so every one is escaped.
"""
from __future__ import annotations

import html
import sys
from pathlib import Path

from convlstm_conformance import findings as _findings
from convlstm_conformance import triage as _triage

STATUSES = ("new", "known", "fixed")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def section(doc: dict) -> str:
    """The <section> listing every finding of ``doc`` (a findings.json)."""
    items = doc.get("findings") or []
    counts = {s: sum(1 for f in items if f.get("status") == s) for s in STATUSES}
    out = ['<section id="findings"><h2>Findings</h2>',
           f"<p>{len(items)} findings from {_e(doc.get('examples', 0))} examples: "
           + ", ".join(f"{n} {s}" for s, n in counts.items()) + "</p>"]
    for f in items:
        t = f.get("triage")
        out.append(f'<article class="finding" id="{_e(f.get("id"))}">')
        out.append(f'<h3><span class="chip s-{_e(f.get("status"))}">{_e(f.get("status"))}'
                   f'</span> {_e(f.get("id"))} — {_e(f.get("adapter"))}</h3>')
        out.append("<p>clauses: " + ", ".join(f"<code>{_e(c)}</code>"
                                              for c in f.get("clauses") or []) + "</p>")
        out.append(f"<p>triage: {_e(_triage.describe(t) if t else 'not triaged')}</p>")
        if t and t.get("when"):
            out.append(f"<p>conditions: <code>{_e(t['when'])}</code></p>")
        if t and t.get("pieces"):
            out.append("<ul>" + "".join(f"<li>{_e(p)}: {_e(v)}</li>"
                                        for p, v in t["pieces"].items()) + "</ul>")
        versions = f.get("versions") or {}
        if versions:
            out.append("<p>versions: " + ", ".join(f"{_e(k)} {_e(v)}"
                                                   for k, v in versions.items()) + "</p>")
        if f.get("snippet"):
            out.append(f"<details><summary>standalone reproduction</summary>"
                       f"<pre>{_e(f['snippet'])}</pre></details>")
        out.append("</article>")
    out.append("</section>")
    return "\n".join(out)


def page(doc: dict) -> str:
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>Findings</title>"
            "</head><body>" + section(doc) + "</body></html>")


def build(directory: Path) -> Path:
    """DIRECTORY/findings.html from DIRECTORY/findings.json (the ``findings``
    reporter the campaign calls when it concludes; raises ValueError for a
    file that is not a findings file)."""
    directory = Path(directory)
    doc = _findings.load(directory / _findings.FINDINGS)
    out = directory / "findings.html"
    out.write_text(page(doc), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m convlstm_conformance.reports.findings CAMPAIGN_DIR",
              file=sys.stderr)
        return 2
    try:
        out = build(Path(args[0]))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"findings: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
