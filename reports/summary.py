"""What a person reads first: one line per implementation, and the findings.

* :func:`in_run` keeps only the implementations the run selected (or that
  left records), each under one name: an adapter selected as
  ``object:pkg.mod:Cls`` or ``command:NAME=...`` records under its own name,
  and run.json's ``selected_as`` says which keys name it.
* :func:`findings` groups what went wrong: every failure by implementation
  and signature (its message with the numbers taken out), every expected
  failure by the known divergence that explained it (its upstream link, else
  its reason), so one divergence touching twenty clauses is one entry that
  lists the clauses and implementations.
* :func:`implementation_lines`: per implementation, the clauses of the spec it
  meets, fails, fails as expected and does not claim, and its findings.
* :func:`snippet` the standalone script of a failure, from its saved case.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .records import AdapterInfo, Record, Results

#: Verdicts of one (clause, implementation) pair, in summary order.
MET, FAILED, EXPECTED, NOT_CLAIMED = "met", "failed", "expected", "not claimed"
VERDICTS = (MET, FAILED, EXPECTED, NOT_CLAIMED)
_VERDICT_OF = {"failed": FAILED, "error": FAILED, "crashed": FAILED, "xpassed": FAILED,
               "xfailed": EXPECTED, "passed": MET, "skipped": NOT_CLAIMED}
FAILING = frozenset({"failed", "error", "crashed", "xpassed"})
# Snippets embed their case's arrays: a report with hundreds of failures, or
# a case of megabytes, must stay a page that opens.
MAX_SNIPPETS = 60
MAX_SNIPPET_CHARS = 200_000
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_URL = re.compile(r"https?://[^\s<>\"'`()]+")


# -- one name per implementation ---------------------------------------------------

def _key_name(key: str) -> str:
    """How the suite names the adapter behind a command-line key, before it runs."""
    if key.startswith("command:"):
        return key[len("command:"):].partition("=")[0].strip() or key
    return key


def in_run(results: Results) -> Results:
    """``results`` with only the run's implementations, each under its own name."""
    alias: dict[str, str] = {}
    for a in results.adapters:
        for key in a.selected_as:
            alias.setdefault(key, a.name)
            alias.setdefault(_key_name(key), a.name)
    name = lambda n: alias.get(n, n)  # noqa: E731
    records = [r if name(r.adapter) == r.adapter else dataclasses.replace(r, adapter=name(r.adapter))
               for r in results.records]
    wanted = [name(_key_name(k)) for k in results.run.selected] + [r.adapter for r in records]
    wanted = list(dict.fromkeys(wanted))
    by_name: dict[str, AdapterInfo] = {}
    for a in results.adapters:
        if name(a.name) == a.name:
            by_name.setdefault(a.name, a)
    ordered = [by_name[n] for n in by_name if n in wanted]
    ordered += [AdapterInfo(n, declared=False) for n in wanted if n not in by_name]
    return dataclasses.replace(results, adapters=ordered, records=records)


def left_out(full: Results, shown: Results) -> list[AdapterInfo]:
    """Registered implementations the run did not select."""
    names = {a.name for a in shown.adapters}
    return [a for a in full.adapters if a.name not in names and a.declared]


# -- findings ------------------------------------------------------------------------

@dataclass
class Finding:
    anchor: str
    kind: str                          # "failure" or "expected"
    title: str                         # the signature, or the known divergence's reason
    outcome: str = ""
    link: str = ""
    reasons: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    clauses: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)

    @property
    def tests(self) -> int:
        return len(self.records)

    def add(self, r: Record, reason: str = "") -> None:
        self.records.append(r)
        if r.adapter not in self.adapters:
            self.adapters.append(r.adapter)
        if r.clause not in self.clauses:
            self.clauses.append(r.clause)
        if reason and reason not in self.reasons:
            self.reasons.append(reason)


def signature(r: Record) -> str:
    """A failure's message with its specifics out: the clause and adapter
    prefix, the numbers; what an implementation raised stays."""
    lines = [line.strip() for line in (r.message or "").splitlines() if line.strip()]
    first = lines[0] if lines else (r.reason or r.outcome)
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)
    if first.startswith(r.adapter + ":"):
        first = first[len(r.adapter) + 1:].strip()
    raised = next((line for line in lines if line.startswith("implementation:")), "")
    text = first + (f" ({raised[:160]})" if raised else "")
    return _NUMBER.sub("N", text)[:240] or r.outcome


def findings(results: Results) -> list[Finding]:
    """Failures grouped by (implementation, outcome, signature), most clauses
    first; then expected failures grouped by the divergence that explained them."""
    failing: dict[tuple, Finding] = {}
    expected: dict[str, Finding] = {}
    for r in results.records:
        if r.outcome in FAILING:
            sig = signature(r)
            key = (r.adapter, r.outcome, sig)
            failing.setdefault(key, Finding("", "failure", sig, outcome=r.outcome)).add(r)
        elif r.outcome == "xfailed":
            explained = [e.get("reason", "") for e in r.expected if e.get("failed")]
            for reason in explained or [r.reason or r.message or "no reason given"]:
                links = _URL.findall(reason)
                key = links[0].rstrip(".,;:!?") if links else reason
                g = expected.setdefault(key, Finding("", "expected", reason,
                                                     link=key if links else ""))
                g.add(r, reason)
    out = sorted(failing.values(), key=lambda f: (-len(f.clauses), f.adapters, f.title))
    out += sorted(expected.values(), key=lambda f: (-len(f.clauses), f.adapters, f.title))
    for n, f in enumerate(out, 1):
        f.anchor = f"finding-{n}"
    return out


# -- one line per implementation ----------------------------------------------------------

@dataclass
class Line:
    adapter: AdapterInfo
    counts: Counter
    total: int
    findings: list[Finding]

    @property
    def share(self) -> float:
        return self.counts[MET] / self.total if self.total else 0.0

    @property
    def conforms(self) -> bool:
        """Every clause it claims is met, or fails only as a known divergence."""
        return not self.counts[FAILED] and bool(self.counts[MET] + self.counts[EXPECTED])


def implementation_lines(results: Results, found: list[Finding]) -> list[Line]:
    """Per implementation, its verdict on every clause of the spec."""
    matrix = results.matrix()
    clauses = [c.id for c in results.clauses if c.in_spec]
    lines = []
    for a in results.adapters:
        counts: Counter = Counter({v: 0 for v in VERDICTS})
        for cid in clauses:
            cell = matrix.get((cid, a.name))
            counts[_VERDICT_OF.get(cell.status, NOT_CLAIMED) if cell else NOT_CLAIMED] += 1
        mine = [f for f in found if a.name in f.adapters]
        lines.append(Line(a, counts, len(clauses), mine))
    return lines


# -- standalone snippets ------------------------------------------------------------------------

def case_file(results_dir: str | Path, r: Record) -> Path | None:
    """The saved case of a failure: the file its reproduce command names,
    looked up by name in the results' ``cases/`` (records are untrusted: no
    path from them is followed)."""
    if not r.repro:
        return None
    try:
        words = shlex.split(r.repro)
    except ValueError:
        return None
    if "repro" not in words or words.index("repro") + 1 >= len(words):
        return None
    name = Path(words[words.index("repro") + 1]).name
    path = Path(results_dir) / "cases" / name
    return path if name.endswith(".npz") and path.is_file() else None


def snippet(results_dir: str | Path, r: Record) -> tuple[str | None, str]:
    """(script, '') for a failure whose case can be written standalone, else
    (None, why not)."""
    path = case_file(results_dir, r)
    if path is None:
        return None, "no saved case"
    from convlstm_conformance import registry
    from convlstm_conformance.model import Case, CaseFileError
    try:
        case = Case.load(path)
    except CaseFileError as exc:
        return None, f"the saved case cannot be read: {exc}"
    try:
        text = registry.snippet_for(r.adapter, case)
    except Exception as exc:     # the oracle refuses a malformed case, say
        return None, f"{type(exc).__name__}: {exc}"
    if text is None:
        return None, (f"{r.adapter} has no snippet writer, or the case "
                      "is more than one forward call with given weights")
    if len(text) > MAX_SNIPPET_CHARS:
        return None, (f"the case is too large to embed ({len(text)} characters); "
                      "run the reproduce command")
    return text, ""
