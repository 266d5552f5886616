"""Certification levels, as the spec's ``levels:`` section declares them.

A level names the features an implementation must claim (names of
``features.py``) and the clauses that must all be met; it may include an
earlier level, whose features and clauses it inherits.  ``clauses: all`` is
every clause of the spec except the errata (they record documentation
mistakes and judge nothing).  Everything is checked when the spec loads: an
unknown clause or feature, an erratum, a level included before it is defined
is a SpecError naming its line.  What a level's verdict is lives in
``certify.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

#: Clause kinds no level can require: nothing runs for them.
UNJUDGED_KINDS = ("erratum",)


@dataclass(frozen=True)
class Level:
    id: str
    title: str
    line: int
    includes: str | None = None
    # feature name -> True (bool feature) or the frozenset of values it must hold
    features: Mapping[str, Any] = field(default_factory=dict)
    clauses: tuple[str, ...] = ()       # every clause, the included level's first


def build(path, doc: list, clauses: Mapping[str, Any], spec_values) -> dict[str, Level]:
    """The levels of ``doc`` (the spec's ``levels:`` list, lines attached).
    ``spec_values(feature)`` gives the values a set feature may name, or None
    where the spec does not enumerate them."""
    from convlstm_conformance.features import BOOL, BY_NAME
    from convlstm_conformance.spec import SpecError
    levels: dict[str, Level] = {}
    for entry in doc or ():
        line = entry.line
        lines = entry.key_lines
        if entry["id"] in levels:
            raise SpecError(path, line, f"duplicate level id {entry['id']!r} (first at line "
                                        f"{levels[entry['id']].line})")
        base = None
        if entry.get("includes") is not None:
            base = levels.get(entry["includes"])
            if base is None:
                raise SpecError(path, lines["includes"],
                                f"level {entry['id']} includes {entry['includes']!r}, which is "
                                f"not a level defined above it ({', '.join(levels) or 'none'})")
        wanted = dict(base.features) if base else {}
        for name, claim in (entry.get("features") or {}).items():
            fline = entry["features"].key_lines[name]
            feature = BY_NAME.get(name)
            if feature is None:
                raise SpecError(path, fline, f"level {entry['id']}: unknown feature {name!r}; "
                                             f"known: {', '.join(sorted(BY_NAME))}")
            if (feature.kind == BOOL) != (claim is True):
                shape = "true" if feature.kind == BOOL else "a list of its values"
                raise SpecError(path, fline, f"level {entry['id']}: feature {name} takes {shape}")
            if claim is not True:
                known = spec_values(name)
                unknown = [v for v in claim if known is not None and v not in known]
                if unknown:
                    raise SpecError(path, fline, f"level {entry['id']}: {name} has no value(s) "
                                                 f"{unknown}; the spec lists {sorted(known)}")
                claim = frozenset(claim) | wanted.get(name, frozenset())
            wanted[name] = claim
        own = entry["clauses"]
        if own == "all":
            own = [c.id for c in clauses.values() if c.kind not in UNJUDGED_KINDS]
            item_lines = [lines["clauses"]] * len(own)
        else:
            item_lines = getattr(own, "item_lines", None) or [lines["clauses"]] * len(own)
            seen: set[str] = set()
            for cid, cline in zip(own, item_lines):
                clause = clauses.get(cid)
                if clause is None:
                    raise SpecError(path, cline, f"level {entry['id']}: unknown clause {cid!r}")
                if clause.kind in UNJUDGED_KINDS:
                    raise SpecError(path, cline, f"level {entry['id']}: {cid} is an {clause.kind}: "
                                                 f"it judges nothing, no level can require it")
                if cid in seen:
                    raise SpecError(path, cline, f"level {entry['id']}: {cid} is listed twice")
                seen.add(cid)
        inherited = base.clauses if base else ()
        merged = inherited + tuple(c for c in own if c not in inherited)
        levels[entry["id"]] = Level(entry["id"], entry["title"], line, entry.get("includes"),
                                    wanted, merged)
    return levels
