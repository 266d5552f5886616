"""The result record schema: one JSON object per test, and one per run.

Every test of the suite writes one *test record* (a line of
``results-<worker>.jsonl``); the controlling process writes one *run record*
(``run.json``).  Both are defined here, once, as JSON Schema (draft 2020-12),
versioned by :data:`SCHEMA_VERSION` and documented in ``docs/records.md``.
The recorder validates every record before writing it, and the report
validates every record it reads, so a field is never a count in one writer
and a list in another.

Test record fields (``TEST_RECORD``):

* identity: ``schema``, ``run_id``, ``nodeid``, ``test`` (the suite module's
  area: numerics, structure, ...), ``clause``, ``adapter`` (the adapter's own
  name, however the command line spelled it), ``outcome``, ``duration_s``;
* what was judged: ``examples`` (judged examples), ``judge`` (what the
  outputs were compared with: the oracle, or for the oracle itself its
  twin formulation), ``worst_ratio`` (largest
  error/budget of a judged example; null when nothing numeric was judged),
  ``errors`` (per returned tensor of the failing example), ``not_judged``
  (``count`` and distinct ``reasons``: cases outside the tolerance model's
  domain), ``excused_draws`` (examples drawn inside a known divergence),
  ``expected`` (the known divergences that explained failures), ``measured``
  (statistics a test measured, e.g. dropout fractions),
  ``unclaimed_but_working`` and ``refused`` (capability probes);
* a failure: ``message``, ``config``, ``dims``, ``dtype``, ``repro``;
  skips and expected failures: ``reason``.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

SCHEMA_VERSION = 1

#: Test outcomes, most severe first.
OUTCOMES = ("failed", "error", "crashed", "xpassed", "xfailed", "passed", "skipped")

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_STRINGS = {"type": "array", "items": {"type": "string"}}

ERROR_MEASURE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["max_abs", "budget", "ratio"],
    "properties": {
        "max_abs": _NUMBER_OR_NULL,
        "budget": _NUMBER_OR_NULL,
        "ratio": _NUMBER_OR_NULL,
        "index": {"type": "array", "items": {"type": "integer"}},
    },
}

TEST_RECORD: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "convlstm-conformance test record",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "run_id", "nodeid", "clause", "adapter", "outcome", "duration_s"],
    "properties": {
        "schema": {"const": SCHEMA_VERSION},
        "run_id": {"type": "string"},
        "nodeid": {"type": "string"},
        "test": {"type": "string"},
        "clause": {"type": "string", "minLength": 1},
        "adapter": {"type": "string", "minLength": 1},
        "outcome": {"enum": list(OUTCOMES)},
        "duration_s": {"type": "number", "minimum": 0},
        "examples": {"type": "integer", "minimum": 0},
        "judge": {"enum": ["oracle", "oracle_twin"]},
        "worst_ratio": _NUMBER_OR_NULL,
        "errors": {"type": "object", "additionalProperties": ERROR_MEASURE},
        "not_judged": {
            "type": "object",
            "additionalProperties": False,
            "required": ["count", "reasons"],
            "properties": {"count": {"type": "integer", "minimum": 1}, "reasons": _STRINGS},
        },
        "excused_draws": {"type": "integer", "minimum": 0},
        "expected": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["reason", "failed", "passed"],
                "properties": {"reason": {"type": "string"}, "clause": {"type": "string"},
                               "file": {"type": "string"}, "line": {"type": "integer"},
                               "failed": {"type": "integer", "minimum": 0},
                               "passed": {"type": "integer", "minimum": 0}},
            },
        },
        "measured": {"type": "array", "items": {"type": "object"}},
        "unclaimed_but_working": _STRINGS,
        "refused": _STRINGS,
        "config": {"type": ["object", "null"]},
        "dims": {"type": ["object", "null"]},
        "dtype": {"type": ["string", "null"]},
        "message": {"type": "string"},
        "repro": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"]},
    },
}

#: Fields every record has; a record missing one cannot be placed in the report.
REQUIRED = tuple(TEST_RECORD["required"])

RUN_RECORD: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "convlstm-conformance run record (run.json)",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "run_id", "started", "finished"],
    "properties": {
        "schema": {"const": SCHEMA_VERSION},
        "run_id": {"type": "string"},
        "started": {"type": "string"},
        "finished": {"type": ["string", "null"]},
        "profile": {"type": "string"},
        "command": {"type": "string"},
        "selected": _STRINGS,
        "suite_version": {"type": "string"},
        "stale_expectations": {"type": "array", "items": {"type": "object"}},
        "partial": {"type": ["string", "null"]},
        "broad_expectations": {"type": "array", "items": {"type": "object"}},
        "environment": {"type": "object"},
        # strategies.Scales: the size of the drawn values (runs with other
        # knobs drew other cases).
        "scales": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "path": {"type": "string"}, "sha256": {"type": "string"},
                "version": {"type": "integer"},
                "clauses": {"type": "array", "items": {
                    "type": "object", "required": ["id"],
                    "properties": {"id": {"type": "string"}, "kind": {"type": "string"},
                                   "title": {"type": "string"}}}},
            },
        },
        "adapters": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "status": {"type": "string"}, "detail": {"type": "string"},
                    "capabilities": {"type": "object"},
                    "versions": {"type": "object", "additionalProperties": {"type": "string"}},
                    "versions_error": {"type": "string"},
                    "selected_as": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


class RecordError(ValueError):
    """A record that does not follow the schema."""


@functools.lru_cache(maxsize=None)
def _validator(which: str):
    import jsonschema
    schema = TEST_RECORD if which == "test" else RUN_RECORD
    return jsonschema.Draft202012Validator(schema)


def problems(record: Any, which: str = "test") -> list[tuple[tuple, str]]:
    """Schema violations of ``record``: (JSON path, message) pairs, empty when valid."""
    return [(tuple(e.absolute_path), e.message)
            for e in sorted(_validator(which).iter_errors(record), key=lambda e: list(map(str, e.absolute_path)))]


def check(record: Any, which: str = "test") -> None:
    """Raise :class:`RecordError` naming every violation."""
    found = problems(record, which)
    if found:
        raise RecordError("; ".join(f"{'/'.join(map(str, p)) or '(record)'}: {m}"
                                    for p, m in found[:5]))


# --------------------------------------------------------------------------
# Helpers for the writers, so every test fills a field the same way

#: Distinct reasons kept per record.
MAX_REASONS = 10


def note_not_judged(record: dict, reason: str) -> None:
    """Count one case the tolerance model could not judge, with its reason."""
    entry = record.setdefault("not_judged", {"count": 0, "reasons": []})
    entry["count"] += 1
    if reason not in entry["reasons"] and len(entry["reasons"]) < MAX_REASONS:
        entry["reasons"].append(reason)


def error_measure(max_abs: float, budget: float, ratio: float,
                  index: tuple = ()) -> dict[str, Any]:
    return {"max_abs": max_abs, "budget": budget, "ratio": ratio,
            "index": [int(i) for i in index]}


def plain(value: Any) -> Any:
    """JSON-ready: tuples and sets as lists, numpy scalars as numbers."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return str(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)
