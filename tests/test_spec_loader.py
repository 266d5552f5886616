"""The spec loader (core/spec.py): the real spec loads and agrees with Keras 3; every
malformed spec fails with a SpecError that names the file, the right line and the defect."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from convlstm_conformance.spec import DEFAULT_SPEC, SpecError, load

REPO = Path(__file__).resolve().parents[1]
REAL_TEXT = DEFAULT_SPEC.read_text(encoding="utf-8")

# A small complete spec: every line number below is under this file's control.
MINIMAL = """\
spec_version: 1
layer: Tiny
sources:
  ref:
    title: "reference"
    url: https://example.org/tiny
    version: "1.0"
derived:
  pad: "lower(padding)"
arguments:
  filters:
    phase: constructor
    type: int
    required: true
    doc: "filters: int."
    source: ref
    domain: {min: 1}
    clause: ARG-FILTERS
    error: {type: ValueError, match: "(?i)filters", phase: any}
    break: {values: [0, -1]}
  padding:
    phase: constructor
    type: enum
    default: valid
    doc: "padding: valid or same."
    source: ref
    draw: {min: 1, max: "filters + 1"}
  inputs:
    phase: call
    type: input
    required: true
    doc: "inputs: 5-D."
    source: ref
    rank: 5
    dims:
      batch: {min: 1, max: 2}
      timesteps: {min: 1, max: 2}
      rows: {min: 1, max: 4}
      cols: {min: 1, max: 4}
      channels: {min: 1, max: 2}
clauses:
  - id: SHAPE-ANY
    kind: shape
    title: "a shape clause"
    doc: "shape."
    source: ref
    when: "pad == 'valid'"
    shapes: {state: "(batch, rows, cols, filters)"}
  - id: ARG-NOT-BIG
    kind: constraint
    title: "filters at most 8"
    doc: "constraint."
    source: ref
    forbids: "filters > 8"
    break: {filters: {values: [9]}}
    error: {type: ValueError, match: "(?i)filters", phase: construct}
  - id: SEM-PAD
    kind: semantics
    title: "padding"
    doc: "semantics."
    source: ref
    focus: {padding: [same]}
dtypes:
  float32: {computes_in: float32}
  float16: {computes_in: float16}
  mixed_float16: {computes_in: float16, policy: true}
"""


def line_with(text: str, marker: str) -> int:
    """1-based number of the one line of ``text`` containing ``marker``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if marker in line]
    assert len(hits) == 1, f"marker {marker!r} is on lines {hits}, expected exactly one"
    return hits[0]


def corrupt(base: str, old: str, new: str) -> str:
    assert base.count(old) == 1, (
        f"{old!r} occurs {base.count(old)} times in the base spec, expected once "
        f"(the real spec changed? pick another anchor)")
    return base.replace(old, new)


def expect_spec_error(path: Path, line: int | None, pattern: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load(path)
    err = info.value
    assert re.search(pattern, err.reason), \
        f"reason should match /{pattern}/, got {err.reason!r}"
    assert err.line == line, f"expected line {line}, got {err.line} ({err.reason})"
    assert err.path == str(path), f"expected path {path}, got {err.path}"
    assert str(err).startswith(f"{path}:{line}: " if line else f"{path}: "), str(err)
    return err


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# Specs that load


def test_real_spec_loads():
    spec = load()
    assert spec.layer == "ConvLSTM2D"
    assert spec.path == DEFAULT_SPEC
    assert len(spec.sha256) == 64
    call = {a.name for a in spec.arguments.values() if a.phase == "call"}
    assert call == {"inputs", "mask", "training", "initial_state"}, call
    for cid in ("ARG-STRIDES-DILATION", "SHAPE-SAME", "SEM-GO-BACKWARDS", "ARG-FILTERS"):
        assert cid in spec.clauses, f"clause {cid} missing from the real spec"
    rule = spec.clause("ARG-STRIDES-DILATION")
    assert rule.kind == "constraint" and rule.error.type == "ValueError"
    assert rule.error.match.search("strides > 1 is incompatible with dilation_rate > 1")


def test_real_spec_clause_lines_point_at_their_ids():
    # SpecErrors and reports cite clause lines: they must land on `- id: <ID>`.
    lines = REAL_TEXT.splitlines()
    for clause in load().clauses.values():
        if clause.kind == "domain":   # declared by an argument's `clause:` key
            assert lines[clause.line - 1].strip() == f"clause: {clause.id}", clause.id
        else:
            assert lines[clause.line - 1].strip() == f"- id: {clause.id}", clause.id


def test_minimal_spec_loads(tmp_path):
    spec = load(write(tmp_path, MINIMAL))
    assert spec.layer == "Tiny"
    assert list(spec.clauses) == ["ARG-FILTERS", "SHAPE-ANY", "ARG-NOT-BIG", "SEM-PAD"]
    assert spec.clause("SHAPE-ANY").line == line_with(MINIMAL, "- id: SHAPE-ANY")
    assert spec.arguments["padding"].line == line_with(MINIMAL, "  padding:")
    assert spec.clause("ARG-NOT-BIG").forbids({"filters": 9}) is True


# --------------------------------------------------------------------------
# Malformed specs built from the minimal one: (old, new, marker on the expected line, reason)

MINIMAL_DEFECTS = {
    "yaml-syntax": ('title: "a shape clause"', 'title: "a shape clause" trailing',
                    "trailing", r"^YAML syntax: "),
    "yaml-tab": ("layer: Tiny\n", "layer: Tiny\n\tbad: 1\n", "\tbad", r"^YAML syntax: .*'\\t'"),
    "wrong-type-required": ("    required: true\n    doc: \"filters", "    required: \"yes\"\n    doc: \"filters",
                            'required: "yes"',
                            r"at arguments/filters/required: 'yes' is not of type 'boolean'"),
    "wrong-type-rank": ("rank: 5", "rank: five", "rank: five",
                        r"at arguments/inputs/rank: 'five' is not of type 'integer'"),
    "wrong-type-title": ('title: "padding"', "title: [padding]", "title: [padding]",
                         r"at clauses/2/title: \['padding'\] is not of type 'string'"),
    "bad-spec-version": ("spec_version: 1", "spec_version: 2", "spec_version",
                         r"at spec_version: 1 was expected"),
    "unknown-kind": ("kind: semantics", "kind: semantic", "kind: semantic",
                     r"at clauses/2/kind: 'semantic' is not one of"),
    "bad-phase": ("match: \"(?i)filters\", phase: construct}", "match: \"(?i)filters\", phase: build}",
                  "phase: build", r"at clauses/1/error/phase: 'build' is not one of"),
    "bad-clause-id": ("- id: SEM-PAD", "- id: sem-pad", "- id: sem-pad",
                      r"at clauses/2/id: 'sem-pad' does not match"),
    "break-unknown-argument": ("break: {filters: {values: [9]}}", "break: {filterz: {values: [9]}}",
                               "filterz", r"^clause ARG-NOT-BIG breaks unknown name 'filterz'$"),
    "focus-unknown-argument": ("focus: {padding: [same]}", "focus: {paddin: [same]}", "paddin:",
                               r"^clause SEM-PAD focuses on unknown argument 'paddin'$"),
    "expr-syntax": ('forbids: "filters > 8"', 'forbids: "filters >"', "forbids:",
                    r"^bad expression: syntax error in 'filters >'"),
    "expr-import": ('forbids: "filters > 8"', "forbids: \"__import__('os')\"", "forbids:",
                    r"^bad expression: call to '__import__' not allowed"),
    "expr-open": ('forbids: "filters > 8"', "forbids: \"open('/etc/passwd')\"", "forbids:",
                  r"^bad expression: call to 'open' not allowed"),
    "expr-method-call": ("when: \"pad == 'valid'\"", "when: \"padding.lower() == 'valid'\"", "when:",
                         r"^bad expression: call to 'padding.lower' not allowed"),
    "expr-attribute": ("when: \"pad == 'valid'\"", "when: \"().__class__\"", "when:",
                       r"^bad expression: Attribute not allowed in '\(\)\.__class__'"),
    "expr-unknown-name": ("when: \"pad == 'valid'\"", "when: \"paddng == 'valid'\"", "when:",
                          r"^bad expression: unknown name\(s\) paddng in "),
    "expr-unknown-name-in-shapes": ('"(batch, rows, cols, filters)"', '"(batch, rows, cols, filterz)"',
                                    "shapes:", r"^bad expression: unknown name\(s\) filterz in "),
    "expr-in-derived": ('pad: "lower(padding)"', 'pad: "padding.lower()"', "pad:",
                        r"^bad expression: call to 'padding.lower' not allowed"),
    "derived-shadows-argument": ('  pad: "lower(padding)"', '  filters: "lower(padding)"',
                                 'filters: "lower', r"^derived name 'filters' shadows an argument"),
    "duplicate-clause-id": ("- id: SEM-PAD", "- id: SHAPE-ANY", "kind: semantics",
                            None),  # expected line computed in the test: the second `- id: SHAPE-ANY`
    "duplicate-of-domain-clause": ("- id: SEM-PAD", "- id: ARG-FILTERS", "- id: ARG-FILTERS",
                                   r"^duplicate clause id ARG-FILTERS \(first at line 18\)$"),
    "unknown-source-clause": ("    source: ref\n    focus:", "    source: reff\n    focus:",
                              "source: reff", r"^unknown source 'reff'; declared: ref$"),
    "unknown-source-argument": ("    source: ref\n    rank: 5", "    source: docs\n    rank: 5",
                                "source: docs", r"^unknown source 'docs'; declared: ref$"),
    "bad-regex": ('match: "(?i)filters", phase: any', 'match: "(?i)filters[", phase: any',
                  'filters[', r"^bad message pattern '\(\?i\)filters\[': "),
    "bad-regex-clause": ('match: "(?i)filters", phase: construct', 'match: "(?i)(filters", phase: construct',
                         '(?i)(filters', r"^bad message pattern '\(\?i\)\(filters': missing \)"),
    "unknown-exception": ("{type: ValueError, match: \"(?i)filters\", phase: construct",
                          "{type: ValueErorr, match: \"(?i)filters\", phase: construct",
                          "ValueErorr", r"^unknown exception type 'ValueErorr'; known: .*ValueError"),
    "exception-not-a-name": ("{type: ValueError, match: \"(?i)filters\", phase: any",
                             "{type: os.system, match: \"(?i)filters\", phase: any", "os.system",
                             r"at arguments/filters/error/type: 'os.system' does not match"),
    "duplicate-mapping-key": ("    default: valid\n", "    default: valid\n    default: same\n",
                              "default: same", r"^duplicate key 'default'$"),
    "duplicate-top-level-key": ("layer: Tiny\n", "layer: Tiny\nlayer: Other\n", "layer: Other",
                                r"^duplicate key 'layer'$"),
    "constraint-without-error": ('    error: {type: ValueError, match: "(?i)filters", phase: construct}\n', "",
                                 "- id: ARG-NOT-BIG", r"at clauses/1: 'error' is a required property"),
    "constraint-without-forbids": ('    forbids: "filters > 8"\n', "", "- id: ARG-NOT-BIG",
                                   r"at clauses/1: 'forbids' is a required property"),
    "domain-clause-without-error": ('    error: {type: ValueError, match: "(?i)filters", phase: any}\n', "",
                                    "    phase: constructor\n    type: int",
                                    r"at arguments/filters: 'error' is a dependency of 'clause'"),
    "missing-top-level-key": ("layer: Tiny\n", "", "spec_version",
                              r"at \(top level\): 'layer' is a required property"),
    "missing-clause-key": ('    doc: "semantics."\n', "", "- id: SEM-PAD",
                           r"at clauses/2: 'doc' is a required property"),
    "semantics-without-focus": ("    focus: {padding: [same]}\n", "", "- id: SEM-PAD",
                                r"at clauses/2: 'focus' is a required property"),
    "bad-source-url": ("    url: https://example.org/tiny", "    url: ftp://example.org/x", "url:",
                       r"at sources/ref/url: 'ftp://example.org/x' does not match"),
    "source-without-version": ('    version: "1.0"\n', "", 'title: "reference"',
                               r"at sources/ref: 'version' is a required property"),
    "source-as-a-file": ("    url: https://example.org/tiny", "    file: seeds/tiny.txt", "file:",
                         r"at sources/ref: unknown key: .*'file' was unexpected"),
    "each-not-in-focus": ("    focus: {padding: [same]}\n", "    focus: {padding: [same]}\n    each: filters\n",
                          "each: filters", r"^clause SEM-PAD: 'each: filters' names no argument of its focus$"),
    "missing-dtypes": ("dtypes:\n  float32: {computes_in: float32}\n  float16: {computes_in: float16}\n"
                       "  mixed_float16: {computes_in: float16, policy: true}\n", "", "spec_version",
                       r"at \(top level\): 'dtypes' is a required property"),
    "policy-computing-in-unknown-format": ("mixed_float16: {computes_in: float16,",
                                           "mixed_float16: {computes_in: float8,",
                                           "mixed_float16:",
                                           r"^dtype mixed_float16 computes in 'float8', which is "
                                           r"not a format listed under dtypes$"),
    "policy-computing-in-a-policy": ("mixed_float16: {computes_in: float16,",
                                     "mixed_float16: {computes_in: mixed_float16,",
                                     "mixed_float16:",
                                     r"^dtype mixed_float16 computes in 'mixed_float16'"),
    "dtype-key-unknown": ("float16: {computes_in: float16}", "float16: {computes: float16}",
                          "float16: {computes: float16}",
                          r"at dtypes/float16: unknown key: .*'computes' was unexpected"),
}


@pytest.mark.parametrize("name", sorted(MINIMAL_DEFECTS))
def test_malformed_minimal_spec(tmp_path, name):
    old, new, marker, pattern = MINIMAL_DEFECTS[name]
    text = corrupt(MINIMAL, old, new)
    if name == "duplicate-clause-id":
        # The second SHAPE-ANY is the offender; the message cites the first.
        first, second = [n for n, ln in enumerate(text.splitlines(), 1) if "- id: SHAPE-ANY" in ln]
        expect_spec_error(write(tmp_path, text), second,
                          rf"^duplicate clause id SHAPE-ANY \(first at line {first}\)$")
        return
    if "\n" in marker:   # a marker spanning lines names the first of them
        line = text[:text.index(marker)].count("\n") + 1
    else:
        line = line_with(text, marker)
    expect_spec_error(write(tmp_path, text), line, pattern)


def test_missing_key_in_a_nested_mapping_points_into_that_mapping(tmp_path):
    # No line holds a missing key: the mapping that lacks it is the right place, either
    # at the key naming it (`padding:`) or at its first line.
    text = corrupt(MINIMAL, '    doc: "padding: valid or same."\n', "")
    with pytest.raises(SpecError) as info:
        load(write(tmp_path, text))
    err = info.value
    assert err.reason == "at arguments/padding: 'doc' is a required property", err.reason
    named = line_with(text, "  padding:")
    assert err.line in (named, named + 1), f"expected line {named} or {named + 1}, got {err.line}"


@pytest.mark.parametrize("text, line", [
    ("- a\n- b\n", 1),
    ("just a string\n", 1),
    ("", 1),
    ("42\n", 1),
    ("# a comment\n\n- a\n", 3),
])
def test_non_mapping_document(tmp_path, text, line):
    expect_spec_error(write(tmp_path, text), line, r"^the spec must be a mapping at top level$")


def test_unhashable_key(tmp_path):
    text = corrupt(MINIMAL, "layer: Tiny\n", "layer: Tiny\n? [a, b]\n: 1\n")
    expect_spec_error(write(tmp_path, text), line_with(text, "? [a, b]"),
                      r"^unhashable mapping key \['a', 'b'\]$")


def test_file_not_found(tmp_path):
    missing = tmp_path / "nowhere" / "spec.yaml"
    err = expect_spec_error(missing, None, r"^file not found$")
    assert str(err) == f"{missing}: file not found"


def test_not_utf8_names_the_line_of_the_bad_byte(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"spec_version: 1\nlayer: \xff\xfe\n")
    expect_spec_error(path, 2, r"^cannot read: not UTF-8 \(invalid start byte at byte 23\)$")


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


# -- Unknown keys: reported at the unknown key's own line.

@pytest.mark.parametrize("old, new, where, key", [
    ("layer: Tiny\n", "layer: Tiny\nlayers: 3\n", r"\(top level\)", "layers"),
    ("    default: valid\n", "    default: valid\n    defualt: same\n", "arguments/padding", "defualt"),
    ("    focus: {padding: [same]}\n", "    focus: {padding: [same]}\n    fokus: {}\n", "clauses/2", "fokus"),
], ids=["top-level", "argument", "clause"])
def test_unknown_key_message(tmp_path, old, new, where, key):
    with pytest.raises(SpecError) as info:
        load(write(tmp_path, corrupt(MINIMAL, old, new)))
    assert re.search(rf"^at {where}: unknown key: .*'{key}' was unexpected", info.value.reason), \
        info.value.reason


@pytest.mark.parametrize("old, new, key", [
    ("layer: Tiny\n", "layer: Tiny\nlayers: 3\n", "layers: 3"),
    ("    default: valid\n", "    default: valid\n    defualt: same\n", "defualt: same"),
], ids=["top-level", "argument"])
def test_unknown_key_line_is_the_key_line(tmp_path, old, new, key):
    text = corrupt(MINIMAL, old, new)
    expect_spec_error(write(tmp_path, text), line_with(text, key), r"unknown key")


def test_bad_draw_expression_line(tmp_path):
    text = corrupt(MINIMAL, 'draw: {min: 1, max: "filters + 1"}', 'draw: {min: 1, max: "filterz + 1"}')
    expect_spec_error(write(tmp_path, text), line_with(text, "draw:"),
                      r"^bad expression: unknown name\(s\) filterz in ")


def test_bad_draw_expression_is_refused(tmp_path):
    text = corrupt(MINIMAL, 'draw: {min: 1, max: "filters + 1"}', 'draw: {min: 1, max: "filterz + 1"}')
    with pytest.raises(SpecError, match=r"bad expression: unknown name\(s\) filterz in "):
        load(write(tmp_path, text))


# --------------------------------------------------------------------------
# Malformed specs built from the real one

REAL_DEFECTS = {
    "yaml-syntax": ('layer: ConvLSTM2D', 'layer: ConvLSTM2D: again', "layer: ConvLSTM2D",
                    r"^YAML syntax: mapping values are not allowed here"),
    "wrong-type": ("    type: bool\n    default: true\n    doc: \"use_bias",
                   "    type: bool\n    default: true\n    required: \"yes\"\n    doc: \"use_bias",
                   'required: "yes"', r"at arguments/use_bias/required: 'yes' is not of type 'boolean'"),
    "break-unknown-argument": ("dilation_rate: {values: [2, [1, 2], [3, 3]]}}",
                               "dilation: {values: [2, [1, 2], [3, 3]]}}", "dilation: {values",
                               r"^clause ARG-STRIDES-DILATION breaks unknown name 'dilation'$"),
    "focus-unknown-argument": ("focus: {go_backwards: [true], return_sequences", "focus: {backwards: [true], return_sequences",
                               "focus: {backwards", r"^clause SEM-GO-BACKWARDS focuses on unknown argument 'backwards'$"),
    "expr-import": ('forbids: "input_rank != 5"', "forbids: \"__import__('os').system('true')\"",
                    "__import__", r"^bad expression: call to .* not allowed"),
    "expr-unknown-name": ("when: \"pad == 'same'\"", "when: \"paddding == 'same'\"", "paddding",
                          r"^bad expression: unknown name\(s\) paddding in "),
    "duplicate-clause-id": ("  - id: SHAPE-SAME\n", "  - id: SHAPE-VALID\n", None, None),
    "unknown-source": ("    source: keras3-dropout-cell\n", "    source: keras-blog\n",
                       "keras-blog", r"^unknown source 'keras-blog'; declared: "),
    "bad-regex": ('match: "(?i)kernel_size"', 'match: "(?i)kernel_size)"', "kernel_size)",
                  r"^bad message pattern "),
    "unknown-exception": ('{type: ValueError, match: "(?i)padding"', '{type: ArgumentError, match: "(?i)padding"',
                          "ArgumentError", r"^unknown exception type 'ArgumentError'"),
    "duplicate-key": ("  keras3-saving:\n", "  keras3-reference:\n", None, r"^duplicate key 'keras3-reference'$"),
}


@pytest.mark.parametrize("name", sorted(REAL_DEFECTS))
def test_malformed_real_spec(tmp_path, name):
    old, new, marker, pattern = REAL_DEFECTS[name]
    text = corrupt(REAL_TEXT, old, new)
    if name == "duplicate-clause-id":
        first, second = [n for n, ln in enumerate(text.splitlines(), 1) if ln == "  - id: SHAPE-VALID"]
        expect_spec_error(write(tmp_path, text), second,
                          rf"^duplicate clause id SHAPE-VALID \(first at line {first}\)$")
        return
    if name == "duplicate-key":
        second = [n for n, ln in enumerate(text.splitlines(), 1) if ln == "  keras3-reference:"][1]
        expect_spec_error(write(tmp_path, text), second, pattern)
        return
    expect_spec_error(write(tmp_path, text), line_with(text, marker), pattern)


# --------------------------------------------------------------------------
# The real spec against Keras 3 and the source material

_SIGNATURE_SCRIPT = """
import inspect, json, keras
out = []
for p in inspect.signature(keras.layers.ConvLSTM2D).parameters.values():
    if p.kind is p.VAR_KEYWORD:
        continue
    required = p.default is inspect.Parameter.empty
    out.append([p.name, required, None if required else p.default])
print("SIGNATURE=" + json.dumps(out))
"""


def _keras_signature() -> list[tuple[str, bool, object]]:
    """(name, required, default) of keras.layers.ConvLSTM2D's parameters, read in a fresh
    process: Keras 3 fixes its backend at import, which this process must not do."""
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    backend = "jax" if importlib.util.find_spec("jax") else "tensorflow"
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _SIGNATURE_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=300)
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("SIGNATURE=")]
    if proc.returncode != 0 or not found:
        pytest.skip(f"keras did not import with KERAS_BACKEND={backend}: {proc.stderr[-800:]}")
    # JSON turns tuples into lists; defaults are compared after normalisation.
    return [tuple(item) for item in json.loads(found[0][len("SIGNATURE="):])]


@pytest.fixture(scope="module")
def keras_signature():
    return _keras_signature()


def _same_default(spec, name, spec_value, keras_value) -> bool:
    """Equal defaults, with an int and the pair of it the same for pair arguments,
    and a bool never equal to an int."""
    if isinstance(spec_value, bool) or isinstance(keras_value, bool):
        return type(spec_value) is type(keras_value) and spec_value == keras_value
    a, b = spec.normalize(name, spec_value), spec.normalize(name, keras_value)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and tuple(a) == tuple(b)
    return a == b


def test_spec_constructor_arguments_match_keras_signature(keras_signature):
    spec = load()
    ours = {a.name: a for a in spec.constructor_arguments()}
    theirs = {name: (required, default) for name, required, default in keras_signature}
    assert sorted(set(theirs) - set(ours)) == [], "Keras parameters missing from the spec"
    assert sorted(set(ours) - set(theirs)) == [], "spec constructor arguments Keras lacks"
    problems = []
    for name, (required, default) in theirs.items():
        arg = ours[name]
        if arg.required != required:
            problems.append(f"{name}: spec required={arg.required}, Keras required={required}")
        elif not required and not _same_default(spec, name, arg.default, default):
            problems.append(f"{name}: spec default {arg.default!r}, Keras default {default!r}")
    assert not problems, "; ".join(problems)


def test_spec_constructor_arguments_follow_the_keras_order(keras_signature):
    # The spec says its constructor arguments are in signature order.
    ours = [a.name for a in load().constructor_arguments()]
    assert ours == [name for name, _, _ in keras_signature]


def test_same_default_comparison():
    spec = load()
    assert _same_default(spec, "strides", 1, 1)
    assert _same_default(spec, "strides", 1, [1, 1])      # int and pair mean the same
    assert not _same_default(spec, "strides", 1, [1, 2])
    assert _same_default(spec, "dropout", 0.0, 0.0)
    assert not _same_default(spec, "use_bias", True, 1)   # a bool is not an int here
    assert not _same_default(spec, "padding", "valid", "same")
    assert not _same_default(spec, "data_format", None, "channels_last")


def test_sources_cite_upstream_at_the_pinned_release():
    """Every source is a URL at a named release; Keras source links carry the
    tag of that release, which is the Keras the suite is pinned to."""
    pinned = re.search(r"^keras==([\d.]+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    for name, source in load().sources.items():
        assert source["url"].startswith("https://"), (name, source["url"])
        if "github.com/keras-team/keras/" in source["url"]:
            tag = re.search(r"/blob/v([\d.]+)/", source["url"]).group(1)
            assert tag == pinned and source["version"] == f"Keras {tag}", (
                f"source {name} cites Keras {tag} ({source['version']}), but the suite is "
                f"pinned to keras=={pinned} in constraints.txt")


# --------------------------------------------------------------------------
# Hostile specs: each a SpecError naming the file (and the line where there
# is one), quickly, whatever the size of what the file asks for.

from convlstm_conformance import spec as spec_module  # noqa: E402


def test_deeply_nested_flow_yaml_is_refused_at_its_line(tmp_path):
    text = corrupt(MINIMAL, "layer: Tiny\n", "layer: Tiny\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    expect_spec_error(write(tmp_path, text), line_with(text, "x: [[["),
                      r"^YAML syntax: nesting deeper than 32 levels")


def test_deeply_nested_block_yaml_is_refused(tmp_path):
    block = "".join(" " * i + "-\n" for i in range(800))
    path = write(tmp_path, "x:\n" + block)
    err = expect_spec_error(path, 33, r"nesting deeper than 32 levels")
    assert "Recursion" not in err.reason


def test_alias_expansion_is_bounded_before_the_schema_check(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = write(tmp_path, "\n".join(lines) + "\n")       # 10**9 nodes once expanded
    expect_spec_error(path, 1, r"expands to more than 100000 nodes once its aliases are followed")


def test_a_few_aliases_still_load(tmp_path):
    # The shipped spec shares its activation list through an alias.
    assert "*activations" in REAL_TEXT
    load(write(tmp_path, REAL_TEXT))


def test_recursive_alias_is_refused(tmp_path):
    text = corrupt(MINIMAL, "layer: Tiny\n", "layer: Tiny\nloop: &l [*l]\n")
    err = expect_spec_error(write(tmp_path, text), line_with(text, "loop:"), r"recursive")
    assert "Recursion" not in err.reason


@pytest.mark.parametrize("char, name", [("\0", "NUL"), ("\x07", "#x0007"), ("\x1b", "#x001b")])
def test_control_characters_are_refused_at_their_line(tmp_path, char, name):
    text = corrupt(MINIMAL, "layer: Tiny\n", f"layer: Ti{char}ny\n")
    expect_spec_error(write(tmp_path, text), line_with(text, "layer: Ti"),
                      rf"^YAML: unacceptable character {name}")


def test_oversized_file_is_refused_before_parsing(tmp_path):
    path = write(tmp_path, MINIMAL + "# " + "x" * spec_module.MAX_SPEC_BYTES + "\n")
    expect_spec_error(path, None, r"^larger than 1048576 bytes \(limit MAX_SPEC_BYTES\)$")


@pytest.mark.parametrize("where, expression", [
    ("forbids", "((filters ** 64) ** 64) ** 64 > 8"),
    ("forbids", "(((rows ** 64) ** 64) ** 64) ** 64 > 0"),
    ("forbids", "len(('x',) * 9000 + ('y',) * 9000) > 0"),
    ("derived", "((pad_len ** 64) ** 64) ** 64"),
])
def test_expressions_that_explode_are_refused_at_load(tmp_path, where, expression):
    if where == "derived":
        text = corrupt(MINIMAL, 'pad: "lower(padding)"\n',
                       'pad: "lower(padding)"\n  pad_len: "len(pad) + filters"\n'
                       f'  tower: "{expression}"\n')
        line = line_with(text, "tower:")
    else:
        text = corrupt(MINIMAL, 'forbids: "filters > 8"', f'forbids: "{expression}"')
        line = line_with(text, "forbids:")
    err = expect_spec_error(write(tmp_path, text), line, r"^expression crosses a bound: ")
    assert f"{tmp_path / 'spec.yaml'}:{line}: evaluating" in err.reason, err.reason


@pytest.mark.parametrize("expression, fragment", [
    ("-" * 2500 + "filters", "characters is too long"),
    ("not " * 300 + "filters", "levels deep"),
])
def test_long_or_deep_expressions_are_refused_at_their_line(tmp_path, expression, fragment):
    text = corrupt(MINIMAL, 'forbids: "filters > 8"', f'forbids: "{expression}"')
    err = expect_spec_error(write(tmp_path, text), line_with(text, "forbids:"),
                            r"^bad expression: ")
    assert fragment in err.reason and len(err.reason) < 500, err.reason


@pytest.mark.parametrize("pattern, what", [
    ("(a+)+$", "a repetition"),
    ("(x|xy)*z", "an alternation"),
    ("(?:a*b?)*!", "a repetition"),
])
def test_message_patterns_that_backtrack_exponentially_are_refused(tmp_path, pattern, what):
    text = corrupt(MINIMAL, 'match: "(?i)filters", phase: construct}',
                   f'match: "{pattern}", phase: construct}}')
    expect_spec_error(write(tmp_path, text), line_with(text, f'match: "{pattern}"'),
                      rf"has {what} inside a repetition: matching can take exponential time")


def test_real_message_patterns_pass_the_backtracking_check():
    for clause in load().clauses.values():
        if clause.error is not None:
            assert not spec_module._nested_repeat(clause.error.match.pattern), clause.id


def test_an_overlong_message_pattern_is_refused(tmp_path):
    text = corrupt(MINIMAL, 'match: "(?i)filters", phase: construct}',
                   'match: "' + "a" * 600 + '", phase: construct}')
    expect_spec_error(write(tmp_path, text), line_with(text, "a" * 600),
                      r"message pattern of 600 characters is too long")


def test_schema_messages_quote_a_huge_value_shortened(tmp_path):
    text = corrupt(MINIMAL, 'title: "padding"', "title: [" + "x" * 50_000 + "]")
    err = expect_spec_error(write(tmp_path, text), line_with(text, "title: [x"),
                            r"is not of type 'string'")
    assert len(err.reason) < 1000, len(err.reason)
