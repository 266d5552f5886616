"""Results history in SQLite, to compare runs across framework releases.

A run is stored at the granularity maintainers compare: one row per
(clause, adapter) cell with its status, counts, worst error/budget and error
signature, plus the package versions of every adapter, the suite version, the
spec's sha256 and clause ids, and an optional label (the release it stands
for).  Two runs of different suites or specs are compared only on the clauses
both specs have, and the comparison says so (:attr:`Diff.scope`).  Storing is idempotent on ``run_id``: adding the same run again
replaces its rows, so re-adding after late workers finished is safe, and two
processes adding at once take turns (the write holds the database's lock from
its first read).  Every failure of the database (corrupt pages, read-only,
locked past LOCK_TIMEOUT_S, rows that are not what this module wrote) is a
:class:`HistoryError` naming the file.
"""
from __future__ import annotations

import json
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import records
from .records import BAD, Results

# 2 added runs.suite_version/spec_sha256/clauses/label and cells.message;
# a version 1 database is upgraded in place (the new fields read as unknown).
SCHEMA_VERSION = 2
# Error-budget drift: the worst error/budget of a cell moved by this factor
# or more, and one side used at least DRIFT_FLOOR of the budget (below that
# the numbers are rounding noise of a passing cell).
DRIFT_FACTOR = 2.0
DRIFT_FLOOR = 0.05
# Outcomes whose message is part of the verdict (a new message is a change).
_MESSAGED = frozenset({"failed", "error", "crashed", "xfailed", "xpassed"})
_SIGNATURE_CHARS = 400
# How long a writer waits for another process's write to finish (docs/limits.md).
LOCK_TIMEOUT_S = 30.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    started     TEXT,
    started_utc TEXT,      -- normalised, for ordering runs written in other time zones
    finished    TEXT,
    profile     TEXT,
    command     TEXT,
    environment TEXT,      -- JSON
    totals      TEXT,      -- JSON {outcome: count}
    source      TEXT,
    added_at    TEXT NOT NULL,
    seq         INTEGER NOT NULL,  -- insertion order, the tie-breaker
    suite_version TEXT,
    spec_sha256 TEXT,
    clauses     TEXT,      -- JSON [clause id], the spec's clauses
    label       TEXT       -- the release the run stands for, e.g. "2024-07"
);
CREATE TABLE IF NOT EXISTS adapters (
    run_id   TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    adapter  TEXT NOT NULL,
    status   TEXT,
    versions TEXT,         -- JSON {package: version}
    PRIMARY KEY (run_id, adapter)
);
CREATE TABLE IF NOT EXISTS cells (
    run_id      TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    clause      TEXT NOT NULL,
    adapter     TEXT NOT NULL,
    status      TEXT NOT NULL,
    counts      TEXT NOT NULL, -- JSON {outcome: count}
    worst_ratio REAL,
    message     TEXT,      -- error signature: first lines, numbers masked
    PRIMARY KEY (run_id, clause, adapter)
);
"""

_UPGRADE_FROM_1 = """
ALTER TABLE runs ADD COLUMN suite_version TEXT;
ALTER TABLE runs ADD COLUMN spec_sha256 TEXT;
ALTER TABLE runs ADD COLUMN clauses TEXT;
ALTER TABLE runs ADD COLUMN label TEXT;
ALTER TABLE cells ADD COLUMN message TEXT;
"""


class HistoryError(Exception):
    """The history database cannot be used as asked."""


@dataclass
class Snapshot:
    """What a run looked like, enough to compare it with another."""

    run_id: str
    started: str | None = None
    started_utc: str | None = None
    profile: str = ""
    cells: dict[tuple[str, str], str] = field(default_factory=dict)  # -> status
    adapter_status: dict[str, str] = field(default_factory=dict)
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    label: str | None = None
    suite_version: str | None = None
    spec_sha256: str | None = None
    clauses: list[str] | None = None      # the spec's clause ids; None: unknown
    ratios: dict[tuple[str, str], float | None] = field(default_factory=dict)
    messages: dict[tuple[str, str], str | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.label or self.run_id

    def clause_ids(self) -> set[str]:
        """The clauses this run's spec has (those its cells name when unknown)."""
        if self.clauses is not None:
            return set(self.clauses)
        return {clause for clause, _ in self.cells}


@dataclass
class PairChange:
    clause: str
    adapter: str
    before: str | None
    after: str | None


@dataclass
class Drift:
    clause: str
    adapter: str
    before: float
    after: float


@dataclass
class VersionChange:
    adapter: str
    package: str
    before: str | None
    after: str | None


@dataclass
class Diff:
    run_a: str
    run_b: str
    label_a: str | None = None
    label_b: str | None = None
    newly_failing: list[PairChange] = field(default_factory=list)
    newly_fixed: list[PairChange] = field(default_factory=list)
    other_changes: list[PairChange] = field(default_factory=list)
    added: list[PairChange] = field(default_factory=list)
    removed: list[PairChange] = field(default_factory=list)
    version_changes: list[VersionChange] = field(default_factory=list)
    adapter_changes: list[PairChange] = field(default_factory=list)  # clause = ""
    message_changes: list[PairChange] = field(default_factory=list)  # same verdict, new message
    drift: list[Drift] = field(default_factory=list)
    # Set when the suite or spec differ: what was compared, and what was left out.
    scope: str | None = None
    only_a: list[str] = field(default_factory=list)   # clauses only run_a's spec has
    only_b: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any((self.newly_failing, self.newly_fixed, self.other_changes, self.added,
                        self.removed, self.version_changes, self.adapter_changes,
                        self.message_changes, self.drift))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunRow:
    run_id: str
    started: str | None
    finished: str | None
    profile: str
    totals: dict[str, int]
    adapters: int
    added_at: str


# -- public API --------------------------------------------------------------

def add(results_dir: str | Path, db: str | Path, label: str | None = None) -> tuple[str, bool]:
    """Store the run in ``results_dir``; return (run_id, whether it was new)."""
    return add_results(records.load(results_dir), db, label)


def add_results(results: Results, db: str | Path, label: str | None = None) -> tuple[str, bool]:
    run = results.run
    if not run.run_id:
        raise HistoryError(f"{results.directory}: the run has no run_id; cannot store it")
    snap = snapshot(results)
    snap.label = label
    with _database(db, create=True, write=True) as conn:
        old = conn.execute("SELECT seq, added_at FROM runs WHERE run_id = ?",
                           (run.run_id,)).fetchone()
        if old:
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run.run_id,))
            seq, added_at = old
        else:
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
            added_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        conn.execute(
            "INSERT INTO runs (run_id, started, started_utc, finished, profile, command, "
            "environment, totals, source, added_at, seq, suite_version, spec_sha256, clauses, "
            "label) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run.run_id, run.started, snap.started_utc, run.finished, run.profile, run.command,
             json.dumps(run.environment, sort_keys=True, default=str),
             json.dumps(dict(results.totals()), sort_keys=True),
             str(Path(results.directory).resolve()), added_at, seq,
             snap.suite_version, snap.spec_sha256,
             None if snap.clauses is None else json.dumps(snap.clauses), label))
        conn.executemany(
            "INSERT INTO adapters VALUES (?,?,?,?)",
            [(run.run_id, a.name, a.status, json.dumps(a.versions, sort_keys=True))
             for a in results.adapters if a.declared])
        conn.executemany(
            "INSERT INTO cells (run_id, clause, adapter, status, counts, worst_ratio, message) "
            "VALUES (?,?,?,?,?,?,?)",
            [(run.run_id, c.clause, c.adapter, c.status, json.dumps(dict(c.counts), sort_keys=True),
              _finite_or_none(c.worst_ratio), signature(c.records))
             for c in results.matrix().values()])
    return run.run_id, old is None


def runs(db: str | Path) -> list[RunRow]:
    """Every stored run, oldest first."""
    with _database(db) as conn:
        rows = conn.execute(
            "SELECT r.run_id, r.started, r.finished, r.profile, r.totals, r.added_at, "
            "(SELECT COUNT(*) FROM adapters a WHERE a.run_id = r.run_id) "
            "FROM runs r ORDER BY " + _ORDER).fetchall()
        return [RunRow(str(run_id), started, finished, profile or "",
                       _json_object(totals, f"run {run_id}: totals"), n, added_at)
                for run_id, started, finished, profile, totals, added_at, n in rows]


def diff(db: str | Path, run_a: str, run_b: str) -> Diff:
    """What changed from ``run_a`` to ``run_b`` (ids or unique id prefixes)."""
    with _database(db) as conn:
        a = _load_snapshot(conn, _resolve(conn, run_a))
        b = _load_snapshot(conn, _resolve(conn, run_b))
    return compare(a, b)


def series(db: str | Path, releases: list[str] | None = None) -> list[Snapshot]:
    """Runs in release order: ``releases`` (labels, ids or unique prefixes) as
    given; by default every labelled run, by label (a label added twice: its
    latest run), or every run by start time when none has a label."""
    with _database(db) as conn:
        if releases:
            ids = [_resolve(conn, r) for r in releases]
        else:
            latest = {}
            for run_id, label in conn.execute(
                    "SELECT run_id, label FROM runs WHERE label IS NOT NULL ORDER BY seq"):
                latest[label] = run_id
            ids = [latest[k] for k in sorted(latest)] or [
                r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY " + _ORDER)]
        return [_load_snapshot(conn, i) for i in ids]


def previous(db: str | Path, current: Snapshot) -> Snapshot | None:
    """The latest stored run that started before ``current`` (another run id)."""
    with _database(db) as conn:
        rows = conn.execute("SELECT run_id, started_utc FROM runs WHERE run_id != ? ORDER BY "
                            + _ORDER, (current.run_id,)).fetchall()
        if current.started_utc:
            # Runs with an unknown start time cannot be placed; leave them out.
            rows = [r for r in rows if isinstance(r[1], str) and r[1] < current.started_utc]
        return _load_snapshot(conn, rows[-1][0]) if rows else None


def snapshot(results: Results) -> Snapshot:
    matrix = results.matrix()
    in_spec = [c.id for c in results.clauses if c.in_spec]
    return Snapshot(
        run_id=results.run.run_id, started=results.run.started,
        started_utc=_utc(results.run.started), profile=results.run.profile,
        cells={k: c.status for k, c in matrix.items()},
        adapter_status={a.name: a.status for a in results.adapters if a.declared},
        versions={a.name: dict(a.versions) for a in results.adapters if a.declared},
        suite_version=results.run.suite_version or None,
        spec_sha256=results.run.spec_sha256 or None,
        clauses=in_spec if results.run.found and in_spec else None,
        ratios={k: _finite_or_none(c.worst_ratio) for k, c in matrix.items()},
        messages={k: signature(c.records) for k, c in matrix.items()})


def signature(recs) -> str | None:
    """What a cell's failures say, comparable across releases: the first line
    of each distinct message of a failing or expected-failing record, with
    numbers masked (a changed error value is drift, not a new message)."""
    lines = set()
    for r in recs:
        if r.outcome in _MESSAGED:
            text = (r.message or r.reason or "").strip()
            if text:
                lines.add(_mask(text.splitlines()[0]))
    return " | ".join(sorted(lines))[:_SIGNATURE_CHARS] if lines else None


def _mask(line: str) -> str:
    line = re.sub(r"0x[0-9a-fA-F]+", "0x#", line)
    return re.sub(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?", "#", line)


def drifted(before: float | None, after: float | None) -> bool:
    """Whether the worst error/budget moved by DRIFT_FACTOR with at least
    DRIFT_FLOOR of the budget used on one side."""
    if before is None or after is None or max(before, after) < DRIFT_FLOOR:
        return False
    low, high = sorted((before, after))
    return low <= 0 or high / low >= DRIFT_FACTOR


def compare(a: Snapshot, b: Snapshot) -> Diff:
    d = Diff(a.run_id, b.run_id, a.label, b.label)
    clauses_a, clauses_b = a.clause_ids(), b.clause_ids()
    d.only_a, d.only_b = sorted(clauses_a - clauses_b), sorted(clauses_b - clauses_a)
    if (a.suite_version, a.spec_sha256) != (b.suite_version, b.spec_sha256):
        d.scope = (f"suite {a.suite_version or '?'} -> {b.suite_version or '?'}, spec "
                   f"{(a.spec_sha256 or '?')[:12]} -> {(b.spec_sha256 or '?')[:12]}: compared "
                   f"on the {len(clauses_a & clauses_b)} clauses both have")
        if d.only_a or d.only_b:
            d.scope += (f"; left out {len(d.only_a)} only in {a.name}, "
                        f"{len(d.only_b)} only in {b.name}")
    common = clauses_a & clauses_b
    for key in sorted(k for k in set(a.cells) | set(b.cells) if k[0] in common):
        before, after = a.cells.get(key), b.cells.get(key)
        change = PairChange(key[0], key[1], before, after)
        if before is not None and before == after and before in _MESSAGED:
            ma, mb = a.messages.get(key), b.messages.get(key)
            if ma and mb and ma != mb:
                d.message_changes.append(PairChange(key[0], key[1], ma, mb))
        ra, rb = a.ratios.get(key), b.ratios.get(key)
        if drifted(ra, rb):
            d.drift.append(Drift(key[0], key[1], ra, rb))
        if before is None:
            d.added.append(change)
        elif after is None:
            d.removed.append(change)
        if after in BAD and before not in BAD:
            d.newly_failing.append(change)
        elif before in BAD and after is not None and after not in BAD:
            d.newly_fixed.append(change)
        elif before is not None and after is not None and before != after:
            d.other_changes.append(change)
    for name in sorted(set(a.adapter_status) | set(b.adapter_status)):
        before, after = a.adapter_status.get(name), b.adapter_status.get(name)
        if before != after:
            d.adapter_changes.append(PairChange("", name, before, after))
        va, vb = a.versions.get(name, {}), b.versions.get(name, {})
        for pkg in sorted(set(va) | set(vb)):
            if va.get(pkg) != vb.get(pkg):
                d.version_changes.append(VersionChange(name, pkg, va.get(pkg), vb.get(pkg)))
    return d


# -- internals ---------------------------------------------------------------

# NULL start times sort first; insertion order breaks ties.
_ORDER = "started_utc IS NOT NULL, started_utc, seq"


class _Corrupt(Exception):
    """A stored value that is not what this module writes."""


@contextmanager
def _database(db: str | Path, create: bool = False, write: bool = False):
    """A connection to the history at ``db``, inside one transaction that
    commits when the block ends; every database failure becomes a
    HistoryError naming the file.  ``write`` takes the write lock at once, so
    a read-then-write (add's check for an existing run) cannot interleave
    with another process's."""
    path = Path(db)
    conn = _connect(path, create)
    try:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if isinstance(exc, sqlite3.Error):
            raise HistoryError(_describe(path, exc)) from None
        if isinstance(exc, _Corrupt):
            raise HistoryError(f"{path}: corrupt history database: {exc}") from None
        raise
    finally:
        conn.close()


def _describe(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return f"{path}: cannot write the history database: it is read-only ({text})"
    if "locked" in text or "busy" in text:
        return (f"{path}: the history database stayed locked by another process for "
                f"{LOCK_TIMEOUT_S:g} s ({text})")
    if "malformed" in text or "corrupt" in text:
        return f"{path}: corrupt history database ({text})"
    return f"{path}: not a usable history database ({text})"


def _connect(path: Path, create: bool = False) -> sqlite3.Connection:
    if not create and not path.exists():
        raise HistoryError(f"{path}: no such history database")
    conn = None
    try:
        # Autocommit: _database opens and ends the transactions itself.
        conn = sqlite3.connect(path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION or version < 0:
            raise HistoryError(f"{path}: history schema version {version} is not one this "
                               f"tool knows ({SCHEMA_VERSION})")
        if version == 0:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables - {"runs", "adapters", "cells"}:
                raise HistoryError(f"{path}: an SQLite database, but not a results history")
            conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA
                               + f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif version == 1:
            conn.executescript("BEGIN IMMEDIATE;" + _UPGRADE_FROM_1
                               + f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        return conn
    except (HistoryError, sqlite3.Error) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, HistoryError):
            raise
        raise HistoryError(_describe(path, exc)) from None


def _json_object(text, what: str) -> dict:
    """A stored JSON object, checked: the database may have been edited."""
    try:
        value = json.loads(text or "{}")
    except (TypeError, ValueError, RecursionError):
        raise _Corrupt(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise _Corrupt(f"{what} is not a JSON object")
    return value


def _resolve(conn: sqlite3.Connection, run_id: str) -> str:
    """A run id, a release label (the latest run added with it), or a unique
    prefix of a run id."""
    if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
        return run_id
    labelled = conn.execute("SELECT run_id FROM runs WHERE label = ? ORDER BY seq DESC",
                            (run_id,)).fetchone()
    if labelled:
        return labelled[0]
    escaped = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    matches = [r[0] for r in conn.execute(
        "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\'", (escaped + "%",))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise HistoryError(f"no run {run_id!r} in the history")
    raise HistoryError(f"run id prefix {run_id!r} is ambiguous: {', '.join(matches[:5])}")


def _load_snapshot(conn: sqlite3.Connection, run_id: str) -> Snapshot:
    row = conn.execute(
        "SELECT started, started_utc, profile, label, suite_version, spec_sha256, clauses "
        "FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise HistoryError(f"no run {run_id!r} in the history")
    started, started_utc, profile, label, suite, spec_sha, clauses = row
    snap = Snapshot(run_id, started, started_utc, profile or "", label=label,
                    suite_version=suite, spec_sha256=spec_sha)
    if clauses is not None:
        try:
            ids = json.loads(clauses)
        except (TypeError, ValueError, RecursionError):
            raise _Corrupt(f"run {run_id}: clauses is not JSON") from None
        if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
            raise _Corrupt(f"run {run_id}: clauses is not a list of clause ids")
        snap.clauses = ids
    for clause, adapter, status, ratio, message in conn.execute(
            "SELECT clause, adapter, status, worst_ratio, message FROM cells WHERE run_id = ?",
            (run_id,)):
        snap.cells[(clause, adapter)] = status
        snap.ratios[(clause, adapter)] = ratio if isinstance(ratio, (int, float)) else None
        snap.messages[(clause, adapter)] = message if isinstance(message, str) else None
    for adapter, status, versions in conn.execute(
            "SELECT adapter, status, versions FROM adapters WHERE run_id = ?", (run_id,)):
        snap.adapter_status[adapter] = status
        snap.versions[adapter] = {str(k): str(v) for k, v in _json_object(
            versions, f"run {run_id}, adapter {adapter}: versions").items()}
    return snap


def _utc(stamp: str | None) -> str | None:
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when.isoformat(timespec="microseconds")


def _finite_or_none(value: float | None) -> float | None:
    # SQLite has no NaN; keep inf (it sorts sensibly) and drop NaN.
    return None if value is None or value != value else value
