"""Known, real divergences of an implementation: expected failures as data.

One YAML file per adapter under ``conformance/expectations/`` (installed as
``convlstm_conformance/suite/expectations``)::

    adapter: keras3-tensorflow
    expected_failures:
      - clause: SEM-DATA-FORMAT       # a clause id, or "*" for any clause
        when: "fmt == 'channels_first'"   # optional spec expression
        match: "diverges"             # optional regex the failure message must match
        reason: why it fails, in one or two sentences
        link: https://github.com/...  # upstream issue, where one exists

A failing example that matches an entry is recorded as expected and the test
goes on drawing (an entry naming the clause is preferred over a "*" one, so a
broad entry does not absorb a failure that a specific one explains).  An
entry must name its clause or carry a ``when``: a catch-all is refused.  An
entry that no longer matches a failure is stale and fails the run: one naming
a clause fails its test, a "*" one is found across the run's records at its
end (``plugin.stale_expectations``).  A "*" entry marks a region of every
clause: once its divergence has shown in a test, the test redraws instead of
running more examples there (``harness.Context.steer``).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import convlstm_conformance.suite as _suite
from convlstm_conformance.expr import Expr, ExprError, parse
from convlstm_conformance.spec import DIM_NAMES, Spec, SpecError, _load_yaml

# The suite's own files, for the implementations registered with it.
EXPECTATIONS_DIR = Path(_suite.__file__).resolve().parent / "expectations"
_KEYS = {"clause", "when", "match", "reason", "link"}


@dataclass(frozen=True)
class Expectation:
    adapter: str
    clause: str
    reason: str
    link: str = ""
    when: Expr | None = None
    line: int = 0
    match: re.Pattern | None = None
    path: str = ""          # the expectations file, for messages

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def matches(self, clause_id: str, env: Mapping[str, Any], problem: str | None = None) -> bool:
        if self.clause not in ("*", clause_id):
            return False
        if problem is not None and self.match is not None and not self.match.search(problem):
            return False
        if self.when is None:
            return True
        try:
            return bool(self.when(env))
        except ExprError:
            return False

    def describe(self) -> str:
        return f"{self.reason}" + (f" ({self.link})" if self.link else "")


def load_file(path: Path, spec: Spec) -> list[Expectation]:
    doc = _load_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("adapter"), str):
        raise SpecError(path, getattr(doc, "line", 1), "expectations need a top-level 'adapter' name")
    return parse_entries(path, doc, "expected_failures", doc["adapter"], spec)


def parse_entries(path: Path, doc: dict, key: str, adapter: str,
                  spec: Spec) -> list[Expectation]:
    """The entries under ``doc[key]``, each checked (SpecError naming its line):
    the one validation of expectation files and of certify's waiver files."""
    entries = doc.get(key) or []
    if not isinstance(entries, list):
        raise SpecError(path, getattr(entries, "line", 1), f"'{key}' must be a list")
    names = set(spec.arguments) | {n for n, _ in spec.derived} | set(DIM_NAMES) | {
        "input_rank", "given", "dtype"}
    out = []
    for entry in entries:
        line = getattr(entry, "line", 0)
        if not isinstance(entry, dict):
            raise SpecError(path, line, f"each entry of '{key}' must be a mapping")
        unknown = set(entry) - _KEYS
        if unknown:
            raise SpecError(path, line, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        clause = entry.get("clause")
        if clause != "*" and clause not in spec.clauses:
            raise SpecError(path, line, f"unknown clause {clause!r}")
        if clause == "*" and entry.get("when") is None:
            # A catch-all would excuse any failure of the adapter, present or
            # future, and could never be shown stale (docs/harness-rules.md).
            raise SpecError(path, line, "an expectation for every clause ('*') needs a 'when' "
                                        "condition saying where the divergence is")
        if not entry.get("reason"):
            raise SpecError(path, line, "an expected failure needs a reason")
        when = None
        if entry.get("when") is not None:
            try:
                when = parse(entry["when"], names)
            except ExprError as exc:
                raise SpecError(path, line, f"bad 'when': {exc}") from None
        pattern = None
        if entry.get("match") is not None:
            try:
                pattern = re.compile(str(entry["match"]))
            except re.error as exc:
                raise SpecError(path, line, f"bad 'match' pattern: {exc}") from None
        link = str(entry.get("link") or "")
        if link and not link.startswith(("http://", "https://")):
            raise SpecError(path, line, f"link must be an http(s) URL, got {link!r}")
        out.append(Expectation(adapter, clause, str(entry["reason"]), link, when, line,
                               pattern, str(path)))
    return out


@functools.lru_cache(maxsize=None)
def _all(spec_path: str) -> dict[str, list[Expectation]]:
    from convlstm_conformance.spec import load_cached
    spec = load_cached(spec_path)
    table: dict[str, list[Expectation]] = {}
    for path in sorted(EXPECTATIONS_DIR.glob("*.yaml")):
        for e in load_file(path, spec):
            table.setdefault(e.adapter, []).append(e)
    return table


def for_adapter(spec: Spec, adapter: str) -> list[Expectation]:
    return list(_all(str(spec.path)).get(adapter, []))


def load_all(spec: Spec) -> dict[str, list[Expectation]]:
    """Every expectations file, loaded and checked (SpecError on a defect)."""
    return _all(str(spec.path))
