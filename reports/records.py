"""Load a results directory and aggregate it into the clause x adapter matrix.

A results directory holds ``run.json`` (what ran, where, with which adapters and
spec) and ``results-*.jsonl`` files, one per pytest worker, one JSON record per
test.  Workers can be killed mid-write and adapters are untrusted, so loading is
tolerant: a bad line is skipped and counted, a bad optional field falls back to
its default, and every such event becomes a warning shown in the report.  Only
input that leaves nothing to report raises :class:`InputError`.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from convlstm_conformance import records as schema

# Cell status priority, most severe first: one failure outweighs any passes.
OUTCOMES = schema.OUTCOMES
BAD = frozenset({"failed", "error", "crashed"})
# Outcomes a maintainer must look at, each listed in full in the report.
REPORTED = frozenset({"failed", "error", "crashed", "xpassed"})

RUN_FILE = "run.json"
RESULTS_GLOB = "results-*.jsonl"
# Per file, how many skipped lines are described individually.
_DETAILED_LINES = 5


class InputError(Exception):
    """The results directory cannot be read into anything worth reporting."""


@dataclass
class ErrorMeasure:
    """One compared quantity: measured error against its budget."""

    max_abs: float | None
    budget: float | None
    ratio: float | None


@dataclass
class Record:
    """One test result, as written by a pytest worker."""

    clause: str
    adapter: str
    outcome: str
    nodeid: str = ""
    run_id: str = ""
    config: Any = None
    dtype: str | None = None
    errors: dict[str, ErrorMeasure] = field(default_factory=dict)
    worst_ratio: float | None = None
    message: str = ""
    repro: str | None = None
    reason: str | None = None
    duration_s: float | None = None
    examples: int | None = None
    test: str = ""
    judge: str = ""                      # "oracle", or "oracle_twin" for the oracle itself
    dims: Any = None
    not_judged: int = 0                  # cases outside the tolerance model's domain
    not_judged_reasons: list[str] = field(default_factory=list)
    excused_draws: int = 0               # examples drawn inside a known divergence
    expected: list[dict] = field(default_factory=list)   # known divergences met
    unclaimed_but_working: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    measured: list[dict] = field(default_factory=list)
    source: str = ""  # "results-gw0.jsonl:12", to trace a record back to its line


@dataclass
class Clause:
    id: str
    kind: str = ""
    title: str = ""
    in_spec: bool = True


@dataclass
class AdapterInfo:
    name: str
    status: str = "unknown"
    detail: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    declared: bool = True  # False: seen in records only, absent from run.json
    selected_as: list[str] = field(default_factory=list)  # command-line keys naming it


@dataclass
class RunInfo:
    run_id: str = ""
    started: str | None = None
    finished: str | None = None
    profile: str = ""
    command: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    spec_path: str = ""
    spec_sha256: str = ""
    suite_version: str = ""
    found: bool = True  # False when run.json was missing or unreadable
    partial: str | None = None   # why the run did not run every test
    selected: list[str] = field(default_factory=list)   # adapter keys the run selected


@dataclass
class Cell:
    """All records of one (clause, adapter) pair."""

    clause: str
    adapter: str
    records: list[Record] = field(default_factory=list)

    @property
    def counts(self) -> Counter:
        return Counter(r.outcome for r in self.records)

    @property
    def status(self) -> str | None:
        counts = self.counts
        return next((o for o in OUTCOMES if counts[o]), None)

    @property
    def worst_ratio(self) -> float | None:
        return worst_ratio(self.records)


@dataclass
class Results:
    run: RunInfo
    clauses: list[Clause]
    adapters: list[AdapterInfo]
    records: list[Record]
    warnings: list[str] = field(default_factory=list)
    skipped_lines: int = 0
    directory: str = ""

    def matrix(self) -> dict[tuple[str, str], Cell]:
        cells: dict[tuple[str, str], Cell] = {}
        for r in self.records:
            key = (r.clause, r.adapter)
            if key not in cells:
                cells[key] = Cell(r.clause, r.adapter)
            cells[key].records.append(r)
        return cells

    def totals(self) -> Counter:
        return Counter(r.outcome for r in self.records)


def ratio_key(value: float | None) -> float:
    """Sort key for ratios: NaN counts as the worst (an output full of NaN)."""
    if value is None:
        return -math.inf
    return math.inf if math.isnan(value) else value


def worst_ratio(records: Iterable[Record]) -> float | None:
    ratios = [r.worst_ratio for r in records if r.worst_ratio is not None]
    return max(ratios, key=ratio_key) if ratios else None


# -- loading -----------------------------------------------------------------

def load(results_dir: str | Path) -> Results:
    """Read ``run.json`` and every ``results-*.jsonl`` under ``results_dir``."""
    root = Path(results_dir)
    if not root.exists():
        raise InputError(f"{root}: no such results directory")
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    warnings: list[str] = []
    run_file = root / RUN_FILE
    raw_run = _read_run_json(run_file, warnings)
    result_files = sorted(root.glob(RESULTS_GLOB))
    if raw_run is None and not result_files:
        raise InputError(
            f"{root}: nothing to report: no readable {RUN_FILE} and no {RESULTS_GLOB} files")

    run = _parse_run(raw_run, warnings) if raw_run is not None else RunInfo(found=False)
    clauses = _parse_clauses(raw_run, warnings) if raw_run is not None else []
    adapters = _parse_adapters(raw_run, warnings) if raw_run is not None else []

    records: list[Record] = []
    skipped = 0
    for path in result_files:
        file_records, file_skipped = _read_jsonl(path, warnings)
        records.extend(file_records)
        skipped += file_skipped
    if not result_files:
        warnings.append(f"no {RESULTS_GLOB} files: the run recorded no results")

    records = _keep_this_run(run, records, warnings)
    _add_undeclared(records, clauses, adapters)
    return Results(run=run, clauses=clauses, adapters=adapters, records=records,
                   warnings=warnings, skipped_lines=skipped, directory=str(root))


def _read_run_json(path: Path, warnings: list[str]) -> dict | None:
    if not path.exists():
        warnings.append(f"{RUN_FILE} is missing: run details, adapter versions and "
                        "clause titles are unknown")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        warnings.append(f"{RUN_FILE} unreadable ({exc}): run details are unknown")
        return None
    except json.JSONDecodeError as exc:
        warnings.append(f"{RUN_FILE} is not valid JSON (line {exc.lineno}, column "
                        f"{exc.colno}: {exc.msg}): run details are unknown")
        return None
    except RecursionError:
        warnings.append(f"{RUN_FILE} is nested too deeply to read: run details are unknown")
        return None
    if not isinstance(data, dict):
        warnings.append(f"{RUN_FILE} holds a JSON {type(data).__name__}, not an object: "
                        "run details are unknown")
        return None
    return data


def _parse_run(raw: dict, warnings: list[str]) -> RunInfo:
    def text(key: str, default: str | None = "") -> str | None:
        value = raw.get(key, default)
        if value is None or isinstance(value, str):
            return value
        warnings.append(f"{RUN_FILE}: {key!r} should be a string, got {_kind(value)}")
        return str(value)

    spec = raw.get("spec") if isinstance(raw.get("spec"), dict) else {}
    env = raw.get("environment")
    if env is not None and not isinstance(env, dict):
        warnings.append(f"{RUN_FILE}: 'environment' should be an object, got {_kind(env)}")
    run_id = text("run_id")
    if not run_id:
        warnings.append(f"{RUN_FILE}: 'run_id' is missing")
    finished = text("finished", None)
    if finished is None:
        warnings.append("the run did not finish (run.json has no 'finished' time): "
                        "results may be incomplete")
    return RunInfo(
        run_id=run_id or "", started=text("started", None), finished=finished,
        partial=text("partial", None),
        profile=text("profile") or "", command=text("command") or "",
        environment=env if isinstance(env, dict) else {},
        spec_path=_as_str(spec.get("path")), spec_sha256=_as_str(spec.get("sha256")),
        suite_version=text("suite_version") or "", selected=_strings(raw.get("selected")))


def _parse_clauses(raw: dict, warnings: list[str]) -> list[Clause]:
    spec = raw.get("spec")
    items = spec.get("clauses") if isinstance(spec, dict) else None
    if not isinstance(items, list):
        warnings.append(f"{RUN_FILE}: no spec clause list: clause titles are unknown")
        return []
    clauses, seen, bad = [], set(), 0
    for item in items:
        cid = item.get("id") if isinstance(item, dict) else None
        if not isinstance(cid, str) or not cid or cid in seen:
            bad += 1
            continue
        seen.add(cid)
        clauses.append(Clause(cid, _as_str(item.get("kind")), _as_str(item.get("title"))))
    if bad:
        warnings.append(f"{RUN_FILE}: {bad} spec clause entries without a valid, unique id ignored")
    return clauses


def _parse_adapters(raw: dict, warnings: list[str]) -> list[AdapterInfo]:
    items = raw.get("adapters")
    if items is None:
        return []
    if not isinstance(items, dict):
        warnings.append(f"{RUN_FILE}: 'adapters' should be an object, got {_kind(items)}")
        return []
    adapters = []
    for name, info in items.items():
        info = info if isinstance(info, dict) else {}
        versions = info.get("versions") if isinstance(info.get("versions"), dict) else {}
        caps = info.get("capabilities") if isinstance(info.get("capabilities"), dict) else {}
        adapters.append(AdapterInfo(
            name=name, status=_as_str(info.get("status")) or "unknown",
            detail=_as_str(info.get("detail")),
            versions={str(k): _as_str(v) for k, v in versions.items()},
            capabilities=dict(caps), selected_as=_strings(info.get("selected_as"))))
    return adapters


def _read_jsonl(path: Path, warnings: list[str]) -> tuple[list[Record], int]:
    records: list[Record] = []
    problems: list[str] = []
    loose_fields = 0
    try:
        # errors="replace": one mangled byte must not cost the whole file.
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        warnings.append(f"{path.name}: unreadable ({exc}): its results are missing")
        return [], 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {lineno}: not valid JSON ({exc.msg}, column {exc.colno})")
            continue
        except RecursionError:
            problems.append(f"line {lineno}: JSON nested too deeply to read")
            continue
        if not isinstance(obj, dict):
            problems.append(f"line {lineno}: a JSON {_kind(obj)}, not an object")
            continue
        record, problem, loose = _parse_record(obj)
        if record is None:
            problems.append(f"line {lineno}: {problem}")
            continue
        record.source = f"{path.name}:{lineno}"
        loose_fields += loose
        records.append(record)
    if problems:
        detail = "; ".join(problems[:_DETAILED_LINES])
        more = len(problems) - _DETAILED_LINES
        if more > 0:
            detail += f"; and {more} more"
        warnings.append(f"{path.name}: {len(problems)} unreadable line"
                        f"{'s' if len(problems) != 1 else ''} skipped ({detail})")
    if loose_fields:
        warnings.append(f"{path.name}: {loose_fields} malformed optional field"
                        f"{'s' if loose_fields != 1 else ''} replaced by defaults")
    return records, len(problems)


def _parse_record(obj: dict) -> tuple[Record | None, str, int]:
    """Return (record, why it was rejected, number of optional fields dropped).

    The record schema (``convlstm_conformance.records``) decides: a record
    whose clause, adapter or outcome breaks it cannot be placed and is
    rejected; one written under another schema version is rejected; any other
    violation drops the offending field (counted, and warned about).
    """
    for key in ("clause", "adapter", "outcome"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            return None, f"missing or non-string {key!r}", 0
    if obj["outcome"] not in OUTCOMES:
        return None, f"unknown outcome {obj['outcome'][:40]!r}", 0
    version = obj.get("schema", schema.SCHEMA_VERSION)
    if version != schema.SCHEMA_VERSION:
        return None, f"written under record schema {version!r}, not {schema.SCHEMA_VERSION}", 0
    # A null optional field reads as an absent one.
    obj = {k: v for k, v in obj.items() if v is not None}
    obj.setdefault("schema", schema.SCHEMA_VERSION)
    # Drop what breaks the schema: an entry of a mapping field (one bad tensor
    # of ``errors``) on its own, any other field whole.
    dropped: set[tuple] = set()
    for path, _ in schema.problems(obj):
        if not path or path[0] in schema.REQUIRED:
            continue
        if len(path) > 1 and isinstance(obj.get(path[0]), dict):
            dropped.add(tuple(path[:2]))
        else:
            dropped.add((path[0],))
    for path in sorted(dropped, key=len):
        if len(path) == 1:
            obj.pop(path[0], None)
        elif isinstance(obj.get(path[0]), dict):
            obj[path[0]] = {k: v for k, v in obj[path[0]].items() if k != path[1]}
    loose = len(dropped)

    errors: dict[str, ErrorMeasure] = {
        str(name): ErrorMeasure(_num(m.get("max_abs")), _num(m.get("budget")), _num(m.get("ratio")))
        for name, m in (obj.get("errors") or {}).items()}
    ratio = _num(obj.get("worst_ratio"))
    if ratio is None and errors:
        ratio = worst_ratio_of(errors)
    duration = _num(obj.get("duration_s"))
    not_judged = obj.get("not_judged") or {}
    return Record(
        clause=obj["clause"], adapter=obj["adapter"], outcome=obj["outcome"],
        nodeid=_text(obj.get("nodeid")), run_id=_text(obj.get("run_id")),
        config=obj.get("config"), dtype=obj.get("dtype"), errors=errors,
        worst_ratio=ratio, message=obj.get("message") or "", repro=obj.get("repro"),
        reason=obj.get("reason"), duration_s=duration, examples=obj.get("examples"),
        test=obj.get("test") or "", judge=obj.get("judge") or "", dims=obj.get("dims"),
        not_judged=int(not_judged.get("count", 0)),
        not_judged_reasons=list(not_judged.get("reasons", [])),
        excused_draws=int(obj.get("excused_draws") or 0), expected=list(obj.get("expected") or []),
        unclaimed_but_working=list(obj.get("unclaimed_but_working") or []),
        refused=list(obj.get("refused") or []),
        measured=list(obj.get("measured") or [])), "", loose


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def worst_ratio_of(errors: dict[str, ErrorMeasure]) -> float | None:
    ratios = [m.ratio for m in errors.values() if m.ratio is not None]
    return max(ratios, key=ratio_key) if ratios else None


def _keep_this_run(run: RunInfo, records: list[Record], warnings: list[str]) -> list[Record]:
    """Drop records left behind by another run in the same directory."""
    ids = Counter(r.run_id for r in records if r.run_id)
    if not run.run_id:
        if not ids:
            return records
        run.run_id = ids.most_common(1)[0][0]
        if not run.found:
            warnings.append(f"run id {run.run_id!r} taken from the result records")
    stale = [r for r in records if r.run_id and r.run_id != run.run_id]
    if stale:
        others = sorted({r.run_id for r in stale})
        shown = ", ".join(repr(o) for o in others[:3]) + (" …" if len(others) > 3 else "")
        warnings.append(f"{len(stale)} records belong to another run ({shown}) and were "
                        "ignored: stale files in the results directory?")
    return [r for r in records if not r.run_id or r.run_id == run.run_id]


def _add_undeclared(records: list[Record], clauses: list[Clause],
                    adapters: list[AdapterInfo]) -> None:
    """Clauses and adapters seen only in records still get a row / column."""
    known_clauses = {c.id for c in clauses}
    extra = sorted({r.clause for r in records} - known_clauses)
    clauses.extend(Clause(cid, in_spec=False) for cid in extra)
    known_adapters = {a.name for a in adapters}
    extra = sorted({r.adapter for r in records} - known_adapters)
    adapters.extend(AdapterInfo(name, declared=False) for name in extra)


def _strings(value: Any) -> list[str]:
    """A list of strings, or [] for anything else (run.json is untrusted)."""
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str)]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _as_str(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")
