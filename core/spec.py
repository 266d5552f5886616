"""Load, check and query the spec (``specs/convlstm2d.yaml``).

The YAML is read with a safe loader that remembers line numbers, validated
against ``specs/schema.yaml``, then checked semantically: clause ids unique and
well formed, sources declared, every expression parsed and its names known,
``break`` recipes naming real arguments.  Any failure raises :class:`SpecError`
carrying the file, the line and the reason.

A spec file is untrusted input: its size, its YAML nesting and the nodes its
aliases expand to are bounded before anything else reads it, every expression
is bounded by ``expr.py``, and every message pattern is checked for the nested
repetition that makes a regular expression take exponential time.  The bounds
are listed in ``docs/limits.md``.

Python code reads clauses and arguments from here; it never repeats them.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

import convlstm_conformance.specs as _specs_package
from convlstm_conformance.expr import Expr, ExprError, ExprLimitError, parse

# The contract ships as package data (top-level ``specs/`` in a checkout).
SPEC_DIR = Path(_specs_package.__file__).resolve().parent
DEFAULT_SPEC = SPEC_DIR / "convlstm2d.yaml"
SCHEMA = SPEC_DIR / "schema.yaml"

# Names an expression may read besides arguments and derived names.
DIM_NAMES = ("batch", "timesteps", "rows", "cols", "channels")
# Probes: not layer arguments, but how the suite perturbs a call to test the
# layer's checks of it; clauses break them like arguments.
PROBE_DEFAULTS = {
    "state_error": "none",       # initial_state given with a wrong shape: rows, filters, rank
    "followup_batch": "same",    # a later call on a stateful layer with another batch size
    "unknown_dim": "none",       # the layer built for an input whose rows/cols/channels are unknown
}
EXTRA_NAMES = ("input_rank", "given", *PROBE_DEFAULTS)
# Bounds on the file itself (docs/limits.md).  The shipped spec: 33 KB,
# nesting 7 levels, about 2,000 nodes, message patterns under 100 characters.
MAX_SPEC_BYTES = 1 << 20        # 1 MiB
MAX_YAML_DEPTH = 32             # mappings and sequences inside one another
MAX_YAML_NODES = 100_000        # nodes, every alias counted as the nodes it stands for
MAX_PATTERN_CHARS = 500         # an error's message pattern
KNOWN_EXCEPTIONS = frozenset({"ValueError", "TypeError", "RuntimeError", "Exception",
                              "NotImplementedError", "IndexError", "KeyError"})


class SpecError(ValueError):
    """A malformed spec: file, line and what is wrong."""

    def __init__(self, path: str | Path, line: int | None, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {reason}")


# --------------------------------------------------------------------------
# YAML with line numbers


class _LineDict(dict):
    line: int = 0
    key_lines: dict


class _LineList(list):
    line: int = 0
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records where each mapping, key and sequence starts,
    and refuses nesting deeper than MAX_YAML_DEPTH while composing (the
    composer and the constructor recurse once per level)."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels (limit "
                                f"MAX_YAML_DEPTH)", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document holds once every alias is replaced by what it names
    (what _plain and the schema check would walk), counted on the composed
    graph without expanding it; stops counting past MAX_YAML_NODES.  An alias
    inside the node it names (a loop) is a ComposerError at that node."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()             # on the current path
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in _children(node)), MAX_YAML_NODES + 1)
            continue
        if key in sizes:
            continue
        if key in open_:
            raise yaml.composer.ComposerError(None, None, "found a recursive alias: a node "
                                                          "that contains itself", node.start_mark)
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise SpecError(loader.name, key_node.start_mark.line + 1,
                            f"unhashable mapping key {key!r}") from None
        if key in out:
            raise SpecError(loader.name, key_node.start_mark.line + 1, f"duplicate key {key!r}")
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _LineList:
    out = _LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _read_spec(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(path, None, "file not found") from None
    except OSError as exc:
        raise SpecError(path, None, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(path, None, f"larger than {MAX_SPEC_BYTES} bytes (limit MAX_SPEC_BYTES)")
    return data


def _load_yaml(path: Path, data: bytes | None = None) -> Any:
    if data is None:
        data = _read_spec(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError(path, line, f"cannot read: not UTF-8 ({exc.reason} at byte "
                                    f"{exc.start})") from None
    loader = None
    try:
        loader = _LineLoader(text)       # the reader checks the characters here
        loader.name = str(path)
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node)
        if size > MAX_YAML_NODES:
            raise SpecError(path, node.start_mark.line + 1,
                            f"the document expands to more than {MAX_YAML_NODES} nodes once "
                            f"its aliases are followed (limit MAX_YAML_NODES)")
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise SpecError(path, line, f"YAML syntax: {exc.problem or exc}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
        what = "NUL" if code == 0 else f"#x{code:04x}"
        raise SpecError(path, line, f"YAML: unacceptable character {what} (control "
                                    f"characters are not allowed)") from None
    except yaml.YAMLError as exc:
        raise SpecError(path, None, f"YAML: {exc}") from None
    except RecursionError:
        # Nesting is bounded while composing; this is the last line of defence.
        raise SpecError(path, None, f"YAML nested too deeply (limit {MAX_YAML_DEPTH} "
                                    f"levels)") from None
    finally:
        if loader is not None:
            loader.dispose()


def _line_of(doc: Any, path: list) -> int | None:
    """Best line for a JSON path inside the loaded document."""
    line = getattr(doc, "line", None)
    node = doc
    for key in path:
        if isinstance(node, _LineDict) and key in node:
            line = node.key_lines.get(key, line)
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
            line = getattr(node, "line", line)
        else:
            break
        line = getattr(node, "line", line) if not isinstance(node, (str, int, float)) else line
    return line


@functools.lru_cache(maxsize=None)
def _schema() -> dict:
    return _load_yaml(SCHEMA)


# --------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Range:
    """How to draw a value: ``values`` to pick from, or integer bounds."""

    min: Expr | float | None = None
    max: Expr | float | None = None
    big_max: Expr | float | None = None
    values: tuple | None = None


@dataclass(frozen=True)
class ErrorSpec:
    type: str
    match: re.Pattern
    phase: str          # construct, call or any

    def describe(self) -> str:
        when = "at construction or call" if self.phase == "any" else f"at {self.phase}"
        return f"{self.type} matching /{self.match.pattern}/ {when}"


@dataclass(frozen=True)
class Argument:
    name: str
    phase: str
    type: str
    doc: str
    source: str
    line: int
    required: bool = False
    default: Any = None
    domain: Mapping[str, Any] | None = None
    draw: Range | None = None
    clause: str | None = None
    rank: int | None = None
    dims: Mapping[str, Range] = field(default_factory=dict)

    def in_domain(self, value: Any) -> tuple[bool, str]:
        """Whether ``value`` lies in the documented domain, and why not."""
        d = self.domain or {}
        if value is None:
            return (bool(d.get("nullable")) or self.default is None and not self.required,
                    "None is not allowed")
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return False, f"{value!r} is not an integer"
            return _in_bounds(value, d)
        if self.type == "int_pair":
            items = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
            if not isinstance(items, (list, tuple)) or len(items) != 2:
                return False, f"{value!r} is neither an integer nor a pair of integers"
            for v in items:
                if isinstance(v, bool) or not isinstance(v, int):
                    return False, f"{v!r} in {value!r} is not an integer"
                ok, why = _in_bounds(v, d)
                if not ok:
                    return ok, why
            return True, ""
        if self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False, f"{value!r} is not a number"
            return _in_bounds(value, d)
        if self.type in ("enum", "activation"):
            if not isinstance(value, str):
                return False, f"{value!r} is not a string"
            allowed = d.get("values", ())
            probe = value.lower() if d.get("case_insensitive") else value
            if probe not in allowed:
                return False, f"{value!r} is not one of {list(allowed)}"
            return True, ""
        if self.type == "bool":
            return isinstance(value, bool), f"{value!r} is not a boolean"
        return True, ""


def _in_bounds(v: float, d: Mapping[str, Any]) -> tuple[bool, str]:
    if "min" in d and v < d["min"]:
        return False, f"{v!r} is below the minimum {d['min']}"
    if "max" in d and v > d["max"]:
        return False, f"{v!r} is above the maximum {d['max']}"
    return True, ""


@dataclass(frozen=True)
class Clause:
    id: str
    kind: str
    title: str
    doc: str
    source: str
    line: int
    note: str = ""
    when: Expr | None = None
    forbids: Expr | None = None
    breaks: Mapping[str, Range] = field(default_factory=dict)
    error: ErrorSpec | None = None
    shapes: Mapping[str, Expr] = field(default_factory=dict)
    returns: Mapping[str, Expr] = field(default_factory=dict)
    identical: tuple = ()
    last_step_equals: str | None = None
    focus: Mapping[str, tuple] = field(default_factory=dict)
    sizes: Mapping[str, int] = field(default_factory=dict)
    initial_bias: tuple = ()        # ((Expr, (i, f, c, o)), ...)
    call: Mapping[str, Any] = field(default_factory=dict)     # how to call the layer
    dtypes: tuple = ()              # dtypes a numerical clause is judged in
    result_dtypes: Mapping[str, str] = field(default_factory=dict)
    defaults_only: bool = False
    each: str | None = None         # judge each focus value of this argument in turn
    argument: str | None = None     # for domain clauses: the argument they guard

    @property
    def forbidding(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class DType:
    """A dtype a layer can be built with: a float format, or a mixed-precision
    policy that computes in one (``computes_in``) with float32 variables."""

    name: str
    computes_in: str
    policy: bool = False


@dataclass(eq=False)
class Spec:
    path: Path
    layer: str
    sources: dict[str, dict]
    derived: list[tuple[str, Expr]]
    arguments: dict[str, Argument]
    clauses: dict[str, Clause]
    sha256: str = ""
    dtypes: dict[str, DType] = field(default_factory=dict)
    # Every expression with its line, in file order (the loader's dry run).
    expressions: tuple[tuple[Expr, int], ...] = field(default=(), repr=False)
    version: int = 1
    levels: dict = field(default_factory=dict)     # id -> levels.Level, in file order

    # -- queries -------------------------------------------------------
    def clause(self, clause_id: str) -> Clause:
        try:
            return self.clauses[clause_id]
        except KeyError:
            raise KeyError(f"no clause {clause_id!r} in {self.path}") from None

    def values(self, argument: str) -> tuple:
        """The documented values of an enumerated argument (its domain)."""
        domain = self.arguments[argument].domain or {}
        return tuple(domain.get("values", ()))

    def formats(self) -> tuple[str, ...]:
        """The float formats (dtypes that are not mixed-precision policies)."""
        return tuple(d.name for d in self.dtypes.values() if not d.policy)

    def of_kind(self, *kinds: str) -> list[Clause]:
        return [c for c in self.clauses.values() if c.kind in kinds]

    def forbidding(self) -> list[Clause]:
        return [c for c in self.clauses.values() if c.forbidding]

    def constructor_arguments(self) -> list[Argument]:
        return [a for a in self.arguments.values() if a.phase == "constructor"]

    def defaults(self) -> dict[str, Any]:
        return {a.name: a.default for a in self.constructor_arguments() if not a.required}

    def normalize(self, name: str, value: Any) -> Any:
        arg = self.arguments.get(name)
        if arg is not None and arg.type == "int_pair":
            if isinstance(value, int) and not isinstance(value, bool):
                return (value, value)
            if isinstance(value, (list, tuple)):
                return tuple(value)
        return value

    def environment(self, config: Mapping[str, Any], dims: Mapping[str, Any] | None = None,
                    input_rank: int = 5, probes: Mapping[str, Any] | None = None,
                    only: set[str] | frozenset | None = None) -> dict[str, Any]:
        """Names for expressions: normalised arguments (defaults filled in),
        input dimensions and derived values.  A derived value that cannot be
        computed (an invalid argument) is left out.  ``only``: compute just the
        derived names these depend on (drawing evaluates many bounds)."""
        env: dict[str, Any] = {}
        for arg in self.arguments.values():
            if arg.type == "input":
                continue
            value = config.get(arg.name, arg.default)
            env[arg.name] = self.normalize(arg.name, value)
        env.update(dims or {})
        env["input_rank"] = input_rank
        env.update(PROBE_DEFAULTS)
        env.update(probes or {})
        # Which arguments the configuration names; the rest take defaults.
        env["given"] = tuple(config)
        wanted = None if only is None else self._closure(frozenset(only))
        for name, expr in self.derived:
            if wanted is not None and name not in wanted:
                continue
            try:
                env[name] = expr(env)
            except ExprLimitError:
                raise           # a defect of the spec, not of this configuration
            except ExprError:
                pass
        return env

    @functools.lru_cache(maxsize=256)
    def _closure(self, names: frozenset) -> frozenset:
        out = set(names)
        for name, expr in reversed(self.derived):
            if name in out:
                out |= set(expr.names)
        return frozenset(out)

    def violations(self, config: Mapping[str, Any], dims: Mapping[str, Any] | None = None,
                   input_rank: int = 5, probes: Mapping[str, Any] | None = None) -> list[str]:
        """Ids of the forbidding clauses a configuration breaks.

        Raises ExprError when a clause cannot be evaluated on this config.
        """
        env = self.environment(config, dims, input_rank, probes)
        out_of_domain = {name for name, value in config.items()
                         if name in self.arguments and not self.arguments[name].in_domain(value)[0]}
        broken = []
        for clause in self.forbidding():
            if clause.argument is not None:
                if clause.argument in out_of_domain:
                    broken.append(clause.id)
            # A cross-argument rule speaks only of arguments inside their
            # domains: with strides=0 the output size has no meaning.
            elif not (self.depends_on(clause.forbids) & out_of_domain) and clause.forbids(env):
                broken.append(clause.id)
        return broken

    def depends_on(self, expr: Expr) -> set[str]:
        """Argument and dimension names an expression reads, through derived names."""
        names = set(expr.names)
        for name, derived in reversed(self.derived):
            if name in names:
                names |= set(derived.names)
        return names

    def fingerprint(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "version": self.version,
                "clauses": [{"id": c.id, "kind": c.kind, "title": c.title}
                            for c in self.clauses.values()]}


# --------------------------------------------------------------------------
# Loading


def load(path: str | Path = DEFAULT_SPEC) -> Spec:
    """Load and check a spec file; raises SpecError on any defect."""
    path = Path(path)
    data = _read_spec(path)
    doc = _load_yaml(path, data)
    if not isinstance(doc, dict):
        raise SpecError(path, getattr(doc, "line", 1), "the spec must be a mapping at top level")
    _validate_schema(path, doc)
    spec = _Builder(path, doc, hashlib.sha256(data).hexdigest()).build()
    _dry_run(spec)
    return spec


@functools.lru_cache(maxsize=8)
def load_cached(path: str = str(DEFAULT_SPEC)) -> Spec:
    return load(path)


def _validate_schema(path: Path, doc: Any) -> None:
    import jsonschema
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(_plain(doc)), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = jsonschema.exceptions.best_match(errors) or errors[0]
        where = _cut("/".join(str(p) for p in err.absolute_path) or "(top level)")
        message = _cut(err.message)
        line = _line_of(doc, list(err.absolute_path))
        if err.validator == "additionalProperties":
            message = f"unknown key: {message}"
            # Point at the first unknown key itself, not at its mapping.
            node = doc
            for key in err.absolute_path:
                node = node[key]
            allowed = set(err.schema.get("properties", {}))
            extra = [k for k in getattr(node, "key_lines", {}) if k not in allowed]
            if extra:
                line = node.key_lines[extra[0]]
        raise SpecError(path, line, f"at {where}: {message}")


def _cut(text: str, limit: int = 300) -> str:
    """Messages quote the offending value; a hostile one may be a megabyte."""
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}...({len(text) - limit} characters)...{text[-limit // 2:]}"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


class _Builder:
    def __init__(self, path: Path, doc: _LineDict, sha256: str):
        self.path, self.doc, self.sha256 = path, doc, sha256
        # Every expression with its line, for the dry run after building.
        self.exprs: list[tuple[Expr, int]] = []

    def fail(self, line: int | None, reason: str) -> SpecError:
        return SpecError(self.path, line, reason)

    def build(self) -> Spec:
        doc = self.doc
        sources = {k: dict(v) for k, v in doc["sources"].items()}
        args_doc: _LineDict = doc["arguments"]
        dims = set(DIM_NAMES)
        names = set(args_doc) | dims | set(EXTRA_NAMES)
        derived: list[tuple[str, Expr]] = []
        derived_doc = doc.get("derived", {}) or {}
        for name, source in derived_doc.items():
            line = derived_doc.key_lines[name]
            if name in names:
                raise self.fail(line, f"derived name {name!r} shadows an argument or dimension")
            derived.append((name, self.expr(source, names, line)))
            names.add(name)
        self.names = frozenset(names)

        dtypes_doc = doc["dtypes"]
        dtypes = {name: DType(name, d["computes_in"], bool(d.get("policy", False)))
                  for name, d in dtypes_doc.items()}
        for d in dtypes.values():
            if d.computes_in not in dtypes or dtypes[d.computes_in].policy:
                raise self.fail(dtypes_doc.key_lines[d.name],
                                f"dtype {d.name} computes in {d.computes_in!r}, which is not "
                                f"a format listed under dtypes")
        self.dtypes = dtypes

        arguments: dict[str, Argument] = {}
        clauses: dict[str, Clause] = {}
        for name, a in args_doc.items():
            line = args_doc.key_lines[name]
            self.check_source(a["source"], sources, a.key_lines.get("source", line))
            dims_doc = a.get("dims") or {}
            arg = Argument(
                name=name, phase=a["phase"], type=a["type"], doc=a["doc"], source=a["source"],
                line=line, required=a.get("required", False), default=a.get("default"),
                domain=_plain(a.get("domain")),
                draw=self.range(a.get("draw"), a.key_lines.get("draw", line)),
                clause=a.get("clause"), rank=a.get("rank"),
                dims={k: self.range(v, dims_doc.key_lines[k]) for k, v in dims_doc.items()})
            if arg.type == "input" and set(arg.dims) != dims:
                raise self.fail(line, f"input dims must be exactly {sorted(dims)}, got {sorted(arg.dims)}")
            arguments[name] = arg
            if arg.clause:
                self.add(clauses, Clause(
                    id=arg.clause, kind="domain", title=f"{name} must lie in its documented domain",
                    doc=arg.doc, source=arg.source, line=a.key_lines["clause"],
                    breaks={name: self.range(a["break"], a.key_lines["break"])},
                    error=self.error(a["error"], a.key_lines["error"]), argument=name))
        for c in doc["clauses"]:
            line = c.line
            self.check_source(c["source"], sources, c.key_lines.get("source", line))
            breaks = {}
            for k, v in (c.get("break") or {}).items():
                if k not in self.names:
                    raise self.fail(c["break"].key_lines[k], f"clause {c['id']} breaks unknown name {k!r}")
                breaks[k] = self.range(v, c["break"].key_lines[k])
            focus = {}
            for k, v in (c.get("focus") or {}).items():
                if k not in arguments:
                    raise self.fail(c["focus"].key_lines[k], f"clause {c['id']} focuses on unknown argument {k!r}")
                focus[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            for k in (c.get("sizes") or {}):
                if k not in dims:
                    raise self.fail(c["sizes"].key_lines[k], f"clause {c['id']} sizes unknown dimension {k!r}")
            returns = {k: self.expr(v, self.names, c["returns"].key_lines[k])
                       for k, v in (c.get("returns") or {}).items()}
            for k, v in (c.get("result_dtypes") or {}).items():
                if k not in dtypes or v not in dtypes or dtypes[v].policy:
                    raise self.fail(c["result_dtypes"].key_lines[k],
                                    f"clause {c['id']}: result_dtypes {k}: {v} names a dtype "
                                    f"not listed under dtypes (or a policy as a result)")
            for d in c.get("dtypes") or ():
                if d not in dtypes:
                    raise self.fail(c.key_lines["dtypes"], f"clause {c['id']}: unknown dtype "
                                                           f"{d!r}; listed: {', '.join(dtypes)}")
            for group in c.get("identical") or []:
                for k in group:
                    if k not in returns:
                        raise self.fail(c.key_lines["identical"], f"clause {c['id']}: {k!r} is not returned")
            self.add(clauses, Clause(
                id=c["id"], kind=c["kind"], title=c["title"], doc=c["doc"], source=c["source"],
                line=line, note=c.get("note", ""),
                when=self.expr(c["when"], self.names, c.key_lines["when"]) if "when" in c else None,
                forbids=(self.expr(c["forbids"], self.names, c.key_lines["forbids"])
                         if "forbids" in c else None),
                breaks=breaks,
                error=self.error(c["error"], c.key_lines["error"]) if "error" in c else None,
                shapes={k: self.expr(v, self.names, c["shapes"].key_lines[k])
                        for k, v in (c.get("shapes") or {}).items()},
                returns=returns,
                identical=tuple(tuple(g) for g in c.get("identical") or ()),
                last_step_equals=c.get("last_step_equals"),
                focus=focus, sizes=dict(c.get("sizes") or {}),
                initial_bias=tuple((self.expr(b["when"], self.names, b.line), tuple(b["gates"]))
                                   for b in c.get("initial_bias") or ()),
                call=dict(c.get("call") or {}), dtypes=tuple(c.get("dtypes") or ()),
                result_dtypes=dict(c.get("result_dtypes") or {}),
                defaults_only=bool(c.get("defaults_only", False)),
                each=self.each(c, focus)))
        from convlstm_conformance import levels
        found = levels.build(self.path, doc.get("levels"), clauses,
                             lambda feature: self.feature_values(feature, arguments, dtypes))
        return Spec(self.path, doc["layer"], sources, derived, arguments, clauses, self.sha256,
                    dtypes, tuple(self.exprs), doc["spec_version"], found)

    @staticmethod
    def feature_values(feature: str, arguments: Mapping[str, Argument], dtypes) -> set | None:
        """The values a level may require of a set feature, where the spec
        enumerates them: dtypes, or the domain of the argument it covers."""
        if feature == "dtype":
            return set(dtypes)
        from convlstm_conformance.features import BY_NAME
        covered = [arguments[a] for a in BY_NAME[feature].covers if a in arguments]
        values = (covered[0].domain or {}).get("values") if len(covered) == 1 else None
        return None if values is None else {str(v).lower() for v in values}

    def each(self, c, focus: Mapping[str, tuple]) -> str | None:
        name = c.get("each")
        if name is not None and name not in focus:
            raise self.fail(c.key_lines["each"], f"clause {c['id']}: 'each: {name}' names "
                                                 f"no argument of its focus")
        return name

    def add(self, clauses: dict, clause: Clause) -> None:
        if clause.id in clauses:
            raise self.fail(clause.line, f"duplicate clause id {clause.id} "
                                         f"(first at line {clauses[clause.id].line})")
        clauses[clause.id] = clause

    def check_source(self, source: str, sources: dict, line: int) -> None:
        if source not in sources:
            raise self.fail(line, f"unknown source {source!r}; declared: {', '.join(sources)}")

    def expr(self, source: Any, names, line: int) -> Expr:
        try:
            expr = dataclasses.replace(parse(source, names), origin=f"{self.path}:{line}")
        except ExprError as exc:
            raise self.fail(line, f"bad expression: {exc}") from None
        self.exprs.append((expr, line))
        return expr

    def error(self, e: Mapping[str, Any], line: int) -> ErrorSpec:
        if e["type"] not in KNOWN_EXCEPTIONS:
            raise self.fail(line, f"unknown exception type {e['type']!r}; "
                                  f"known: {', '.join(sorted(KNOWN_EXCEPTIONS))}")
        source = e["match"]
        if len(source) > MAX_PATTERN_CHARS:
            raise self.fail(line, f"message pattern of {len(source)} characters is too long "
                                  f"(limit MAX_PATTERN_CHARS = {MAX_PATTERN_CHARS})")
        try:
            with warnings.catch_warnings():     # FutureWarnings of odd patterns: not ours to show
                warnings.simplefilter("ignore")
                pattern = re.compile(source)
        except (re.error, RecursionError, OverflowError) as exc:
            raise self.fail(line, f"bad message pattern {source!r}: {exc}") from None
        nested = _nested_repeat(source)
        if nested:
            raise self.fail(line, f"message pattern {source!r} has {nested} inside a "
                                  f"repetition: matching can take exponential time")
        return ErrorSpec(e["type"], pattern, e["phase"])

    def range(self, r: Mapping[str, Any] | None, line: int) -> Range | None:
        if r is None:
            return None
        def bound(key):
            v = r.get(key)
            if isinstance(v, str):
                return self.expr(v, getattr(self, "names", None) or None, line)
            return v
        values = r.get("values")
        if values is not None:
            values = tuple(tuple(v) if isinstance(v, list) else v for v in values)
        return Range(bound("min"), bound("max"), bound("big_max"), values)


def _nested_repeat(pattern: str) -> str:
    """The offending group when ``pattern`` repeats (``*``, ``+``, ``{m,n}``)
    something that itself repeats or branches (``(a+)+``, ``(a|a)*``): the
    shape of catastrophic backtracking.  "" when there is none."""
    try:
        from re import _constants as c, _parser as p    # Python >= 3.11
    except ImportError:                                # pragma: no cover
        return ""
    repeats = (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None))

    def walk(items, inside: bool) -> str:
        for op, av in items:
            if op in repeats and av[1] > 1:
                if inside:
                    return "a repetition"
                found = walk(av[2], True)
                if found:
                    return found
            elif op is c.BRANCH:
                if inside:
                    return "an alternation"
                for branch in av[1]:
                    found = walk(branch, inside)
                    if found:
                        return found
            elif op is c.SUBPATTERN:
                found = walk(av[-1], inside)
                if found:
                    return found
            elif op in (c.ASSERT, c.ASSERT_NOT):
                found = walk(av[1], inside)
                if found:
                    return found
        return ""

    try:
        return walk(p.parse(pattern), False)
    except Exception:       # the pattern compiled; an unparsable corner is not our bound
        return ""


def _sample_env(spec: Spec, size: int | None) -> dict[str, Any]:
    """An environment for the dry run, without derived names.  ``size``
    None: defaults, and the smallest documented values of required arguments
    and dimensions; an integer: that value for every integer argument and
    dimension (an exponent tower on a value of 1 stays small)."""
    config: dict[str, Any] = {}
    dims: dict[str, Any] = {}
    for arg in spec.arguments.values():
        domain = arg.domain or {}
        low = domain.get("min", 1)
        low = low if isinstance(low, int) and not isinstance(low, bool) else 1
        if arg.type == "input":
            for name, r in arg.dims.items():
                least = r.min if isinstance(r, Range) else None
                least = least if isinstance(least, int) and not isinstance(least, bool) else 1
                dims[name] = least if size is None else size
        elif arg.type in ("int", "int_pair") and (arg.required or size is not None):
            value = low if size is None else size
            config[arg.name] = (value, value) if arg.type == "int_pair" else value
        elif arg.required and arg.type in ("enum", "activation") and domain.get("values"):
            config[arg.name] = list(domain["values"])[0]
        elif arg.required:
            config[arg.name] = low
    return spec.environment(config, dims, only=frozenset())


#: The integer the second dry run gives every integer argument and dimension.
DRY_RUN_SIZE = 3


def _dry_run(spec: Spec) -> None:
    """Evaluate every expression on two sample environments: one that
    crosses a bound there (an exponent tower, a repetition that explodes) is
    a defect of the spec, reported at its line now rather than at the first
    example that meets it.  Other evaluation errors are normal: an expression
    may need values the samples do not have."""
    derived = {id(expr): name for name, expr in spec.derived}
    for size in (None, DRY_RUN_SIZE):
        env = _sample_env(spec, size)
        for expr, line in spec.expressions:
            try:
                value = expr(env)
            except ExprLimitError as exc:
                raise SpecError(spec.path, line, f"expression crosses a bound: {exc}") from None
            except ExprError:
                continue
            if id(expr) in derived:       # file order: a derived name before its readers
                env[derived[id(expr)]] = value


def iter_clause_ids(spec: Spec, kinds: tuple[str, ...]) -> Iterator[str]:
    for c in spec.clauses.values():
        if c.kind in kinds:
            yield c.id


def resolve(bound: Expr | float | None, env: Mapping[str, Any]) -> Any:
    """The value of a Range bound in ``env``."""
    if isinstance(bound, Expr):
        return bound(env)
    return bound


def spec_summary_json(spec: Spec) -> str:
    return json.dumps(spec.fingerprint(), indent=2)
