"""Findings: a campaign's failures, deduplicated into the bugs behind them.

A **failure** is one failed test record (docs/records.md) of a shard, with the
minimal case Hypothesis shrank to (``cases/*.npz``).  A **finding** is what
one bug looks like from outside: failures of one implementation with the same
**signature** --

* the implementation;
* the error's character: which returned tensors are wrong, whether wrong from
  the first time step or only from the second on (the input path or the
  carried state), at the border of the frame or inside it, by how much
  (diverging numbers, a raised error and its type, a shape);
* once triaged (core/triage.py), the configuration features found necessary
  ("only when padding == 'valid'").

The clause is deliberately not part of it: one bug seen through five clauses
is one finding listing five clauses.

``findings.json`` (written by :func:`write` into the campaign's folder) holds
every finding with its failures, clauses, triage and case files; the report
(reports/findings.py) and the regression corpus (core/corpus.py) read it.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

FINDINGS = "findings.json"
#: Outcomes of a test record that are failures of the implementation.
FAILED = ("failed", "error", "crashed")


@dataclass
class Failure:
    adapter: str
    clause: str
    test: str
    outcome: str
    message: str
    config: dict | None
    dims: dict | None
    dtype: str | None
    errors: dict
    case: str | None          # the saved minimal case, when the test saved one
    shard: str = ""
    key: str = ""             # how the command line named the implementation

    @property
    def problem(self) -> str:
        """The kind of problem the message states (its first line, past the clause)."""
        first = self.message.splitlines()[0] if self.message else ""
        return first.split(": ", 1)[1] if ": " in first else first


@dataclass
class Summary:
    examples: int = 0
    failures: int = 0
    distinct: int = 0


def read_records(results_dir: Path) -> Iterator[dict]:
    """Every test record of a results directory; unreadable lines are skipped
    (a shard stopped at the time budget may leave half a line)."""
    for path in sorted(Path(results_dir).glob("results-*.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def case_path(record: dict, results_dir: Path) -> str | None:
    """The case file a failure saved, from its reproduction command."""
    repro = record.get("repro")
    if not isinstance(repro, str):
        return None
    try:
        words = shlex.split(repro)
    except ValueError:
        return None
    for word in words:
        if word.endswith(".npz"):
            path = Path(word)
            if not path.is_absolute() and not path.exists():
                path = Path(results_dir) / "cases" / path.name
            return str(path)
    return None


def adapter_key(record: dict) -> str:
    """How the run named the implementation (``--adapter`` of the reproduction
    command: a registered name or object:MODULE:ATTR)."""
    try:
        words = shlex.split(str(record.get("repro") or ""))
    except ValueError:
        words = []
    if "--adapter" in words[:-1]:
        return words[words.index("--adapter") + 1]
    return str(record.get("adapter", "?"))


def failures(dirs: Iterable[Path]) -> list[Failure]:
    found = []
    for d in dirs:
        for r in read_records(d):
            if r.get("outcome") not in FAILED:
                continue
            found.append(Failure(
                adapter=str(r.get("adapter", "?")), clause=str(r.get("clause", "?")),
                test=str(r.get("test", "?")), outcome=str(r.get("outcome")),
                message=str(r.get("message") or ""), config=r.get("config"),
                dims=r.get("dims"), dtype=r.get("dtype"), errors=r.get("errors") or {},
                case=case_path(r, d), shard=Path(d).name, key=adapter_key(r)))
    return found


def examples(dirs: Iterable[Path]) -> int:
    return sum(int(r.get("examples") or 0) for d in dirs for r in read_records(d))


# --------------------------------------------------------------------------
# Signatures


def problem_kind(f: Failure) -> str:
    """The character of the problem, without its numbers."""
    text = f.message
    if f.case is None:
        # No case: the test could not run one (a broken adapter, a harness error).
        return "no case: " + re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", f.problem or f.outcome)[:160]
    m = re.search(r"implementation: (\w+)(?:[^\n]*?(\w+(?:Error|Exception)))?", text)
    if m:
        return f"{m.group(1)} {m.group(2) or ''}".strip()
    if "nondeterministic" in text:
        return "nondeterministic"
    if "shape" in text and "expected" in text:
        return "shape"
    if "NaN" in text or "infinity" in text:
        return "special values"
    return "diverges"


def tensors(f: Failure) -> tuple[str, ...]:
    """The returned tensors over their budget (call 2's 'h' included)."""
    return tuple(sorted(name for name, e in f.errors.items()
                        if isinstance(e, dict) and (e.get("ratio") or 0) > 1))


@dataclass
class Finding:
    adapter: str
    signature: dict
    failures: list[dict] = field(default_factory=list)
    triage: dict | None = None
    status: str = "new"          # new, known (an expectation explains it), fixed (corpus)

    @property
    def id(self) -> str:
        text = json.dumps({"adapter": self.adapter, **self.signature}, sort_keys=True)
        return f"{self.adapter}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"

    @property
    def clauses(self) -> list[str]:
        return sorted({f["clause"] for f in self.failures})

    def to_json(self) -> dict:
        return {"id": self.id, "adapter": self.adapter, "signature": self.signature,
                "clauses": self.clauses, "status": self.status, "triage": self.triage,
                "failures": self.failures}


def signature(f: Failure, triage: dict | None = None, triaged: bool = False) -> dict:
    """What makes two failures the same bug (see the module's docstring).

    Without triage (``triaged`` False: the campaign's running count) failures
    are grouped by the kind of problem and the wrong tensors.  In a triaged
    grouping a failure triage could not re-run keeps its clause: nothing
    shows that two such failures are one bug."""
    if triage is not None and triage.get("character"):
        return {**triage["character"], "necessary": list(triage.get("necessary") or [])}
    sig: dict[str, Any] = {"problem": problem_kind(f), "tensors": list(tensors(f))}
    if triaged:
        sig["clause"] = f.clause
    return sig


def dedupe(found: Iterable[Failure], triage=None) -> list[Finding]:
    """Group failures into findings.  ``triage(failure) -> dict | None`` (core/
    triage.py) refines each signature with the error's character and the
    necessary conditions; without it, failures are grouped by implementation
    and the kind of problem only (the campaign's running count)."""
    by_key: dict[str, Finding] = {}
    for f in found:
        t = triage(f) if triage is not None else None
        sig = signature(f, t, triaged=triage is not None)
        key = json.dumps([f.adapter, sig], sort_keys=True)
        finding = by_key.get(key)
        if finding is None:
            finding = by_key[key] = Finding(f.adapter, sig, triage=t)
        finding.failures.append(asdict(f))
    return sorted(by_key.values(), key=lambda x: (x.adapter, x.id))


def summarize(dirs: Iterable[Path]) -> Summary:
    dirs = list(dirs)
    found = failures(dirs)
    return Summary(examples(dirs), len(found), len(dedupe(found)))


def representative(finding: Finding) -> dict:
    """The failure a finding is shown by: reproduced by triage where one was,
    then the smallest saved case."""
    def size(f: dict) -> tuple:
        path = f.get("case")
        try:
            n = Path(path).stat().st_size if path else 1 << 62
        except OSError:
            n = 1 << 62
        return (f.get("case") is None, n, f["clause"])
    return min(finding.failures, key=size)


def status_of(finding: Finding, spec, still_fails: Callable | None = None,
              corpus_dir: Path | None = None) -> str:
    """fixed: the finding is in the regression corpus (core/corpus.py) and its
    case, re-run now (``still_fails(key, case_path)``: triage.Cache), no
    longer fails; known: an expectation entry of the implementation
    (conformance/expectations/) explains the representative failure; else new."""
    from convlstm_conformance import corpus
    from convlstm_conformance.expectations import for_adapter
    f = representative(finding)
    if still_fails is not None:
        directory = corpus.CORPUS_DIR if corpus_dir is None else Path(corpus_dir)
        entry = next((e for e in corpus.load_index(directory) if e.finding == finding.id), None)
        if entry is not None and still_fails(f.get("key") or finding.adapter,
                                             directory / entry.case) is False:
            return "fixed"
    env = spec.environment(f.get("config") or {}, f.get("dims") or {})
    env["dtype"] = f.get("dtype")
    for e in for_adapter(spec, finding.adapter):
        if e.matches(f["clause"], env, f.get("message") or ""):
            return "known"
    return "new"


def versions(dirs: Iterable[Path]) -> dict[str, dict]:
    """Per implementation, the versions its shards' run.json recorded."""
    out: dict[str, dict] = {}
    for d in dirs:
        try:
            run = json.loads((Path(d) / "run.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for name, info in (run.get("adapters") or {}).items():
            if isinstance(info, dict) and info.get("versions"):
                out.setdefault(name, info["versions"])
        env = run.get("environment")
        if isinstance(env, dict):
            out.setdefault("(environment)", env)
    return out


def snippet(finding: Finding) -> str | None:
    """The standalone reproduction of the representative case, where the
    implementation has a snippet writer (adapters/snippets.py) and the case
    is a plain forward call."""
    from convlstm_conformance import registry
    from convlstm_conformance.model import Case, CaseFileError
    writer = getattr(registry, "snippet_for", None)
    f = representative(finding)
    if writer is None or not f.get("case"):
        return None
    try:
        case = Case.load(f["case"])
    except CaseFileError:
        return None
    if case.cotangent is not None:
        # A gradients failure triaged as a forward divergence is shown forward.
        import dataclasses
        if finding.signature.get("gradients") is False:
            case = dataclasses.replace(case, cotangent=None)
    try:
        return writer(f.get("key") or finding.adapter, case)
    except Exception as exc:       # a writer's bug must not lose the finding
        return f"# no snippet: {type(exc).__name__}: {exc}"


def write(campaign_dir: Path, dirs: Iterable[Path], triage=None, spec=None,
          snippets: bool = False) -> Path:
    """findings.json of a campaign: every finding, with its failures, triage,
    status and (``snippets``) standalone reproduction."""
    dirs = list(dirs)
    found = dedupe(failures(dirs), triage)
    seen = versions(dirs)
    out = []
    for f in found:
        doc = f.to_json()
        if spec is not None:
            doc["status"] = f.status = status_of(f, spec,
                                                 getattr(triage, "still_fails", None))
        doc["case"] = representative(f).get("case")
        doc["versions"] = seen.get(f.adapter, {})
        if snippets:
            doc["snippet"] = snippet(f)
        out.append(doc)
    path = Path(campaign_dir) / FINDINGS
    doc = {"examples": examples(dirs), "shards": [str(d) for d in dirs],
           "environment": seen.get("(environment)", {}), "findings": out}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)
    return path


def load(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a findings file ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("findings"), list):
        raise ValueError(f"{path}: not a findings file (no 'findings' list)")
    return doc
