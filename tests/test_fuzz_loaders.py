"""Property-based fuzzing of the readers of untrusted input: the spec loader
(and its expressions), the case and result loaders, and the worker protocol's
line parsers.  Arbitrary bytes and structured mutations of valid files; the
property is the same for all: only the documented error type escapes, within
a time and a memory bound.

Budget: FUZZ_EXAMPLES examples per property in the normal run;
CONVLSTM_FUZZ_EXAMPLES=N sets it (nightly: 5000), and a run with it set is
random rather than derandomized.
"""
from __future__ import annotations

import collections
import io
import json
import os
import string
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convlstm_conformance import oracle
from convlstm_conformance.expr import ExprError, parse
from convlstm_conformance.model import Case, CaseFileError, Outcome
from convlstm_conformance.spec import SpecError, load
from convlstm_conformance.worker import ProtocolError, parse_reply, parse_request
from tests.bounds import run_bounded
from tests.hostile_corpus import good_case, result_file
from tests.test_spec_loader import MINIMAL

FUZZ_EXAMPLES = 40
EXAMPLES = int(os.environ.get("CONVLSTM_FUZZ_EXAMPLES", FUZZ_EXAMPLES))
TIME_LIMIT_S = 10
MEMORY_LIMIT_BYTES = 128 << 20

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize="CONVLSTM_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# Inputs tried and handled cleanly, per property; CONVLSTM_FUZZ_TOTALS=FILE
# appends them there as one JSON line per test process (the nightly record).
TRIED: collections.Counter = collections.Counter()
CLEAN: collections.Counter = collections.Counter()


def bounded(fn):
    name = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    TRIED[name] += 1
    result = run_bounded(fn, TIME_LIMIT_S, MEMORY_LIMIT_BYTES)
    CLEAN[name] += 1
    return result


@pytest.fixture(scope="module", autouse=True)
def totals():
    yield
    target = os.environ.get("CONVLSTM_FUZZ_TOTALS")
    if target:
        with open(target, "a") as fh:
            fh.write(json.dumps({"tried": dict(TRIED), "clean": dict(CLEAN)}) + "\n")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------
# Structured mutations of a text or a byte string

HOSTILE_TOKENS = [
    "[" * 200, "{a: " * 50, "&a [x, x]", "*a", "*zz", "!!python/object/apply:os.system ['id']",
    "!!binary AAAA", "\0", "\x07", "\t", "- ", ": ", "? ", "'", '"', "#", "|", ">", "%YAML 1.1",
    "---", "...", "9" * 400, "1e999", ".nan", "~", "null", "true", "**64", " ** 64 ** 64",
    "__import__('os')", "().__class__", "lambda: 1", "'%99999d' % 1", "(0,) * 9999",
    "(a+)+$", "\ufeff", "\u2028", "\U0001F600",
]


@st.composite
def mutated_text(draw, base: str):
    """``base`` with a few edits: a token inserted, a span deleted or
    duplicated, two lines swapped."""
    text = base
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "duplicate", "swap", "replace-value"]))
        pos = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:pos] + draw(st.sampled_from(HOSTILE_TOKENS) | st.text(max_size=20)) \
                + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 40)):]
        elif op == "duplicate":
            text = text[:pos] + text[pos:pos + draw(st.integers(1, 200))] + text[pos:]
        elif op == "swap":
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        else:
            # A value after a colon replaced: where the schema and the
            # expressions are reached.
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            key, sep, _ = lines[i].partition(": ")
            if sep:
                lines[i] = key + sep + draw(st.sampled_from(HOSTILE_TOKENS) | expressions())
            text = "\n".join(lines)
    return text


@st.composite
def mutated_bytes(draw, base: bytes):
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            chunk = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                                          b"\xff\xff\xff\x7f", b"PK\x05\x06"]))
            data[pos:pos + len(chunk)] = chunk
    return bytes(data)


# --------------------------------------------------------------------------
# Expressions from the grammar the spec allows, and some it does not

NAMES = ["filters", "rows", "cols", "padding", "strides", "kernel_size", "x"]
ENV = {"filters": 3, "rows": 5, "cols": 4, "padding": "same", "strides": (2, 1),
       "kernel_size": (3, 3), "x": None}


def expressions():
    atoms = st.sampled_from(NAMES) | st.integers(-10**6, 10**6).map(str) \
        | st.sampled_from(["'same'", "'valid'", "()", "(1, 2)", "None", "True", "2.5", "'%d'"])

    def extend(inner):
        binop = st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "==", "<",
                                                  "in", "and", "or", "if 1 else"]), inner)
        return (binop.map(lambda t: f"({t[0]} {t[1]} {t[2]})")
                | st.tuples(st.sampled_from(["max", "min", "abs", "len", "floor", "ceil", "lower",
                                             "open", "__import__"]),
                            st.lists(inner, max_size=3)).map(
                    lambda t: f"{t[0]}({', '.join(t[1])})")
                | st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]")
                | st.lists(inner, max_size=4).map(lambda xs: f"({', '.join(xs)},)")
                | inner.map(lambda e: f"not {e}") | inner.map(lambda e: f"-{e}"))
    return st.recursive(atoms, extend, max_leaves=30)


@FUZZ
@given(source=expressions() | st.text(max_size=300))
def test_expressions_raise_only_expr_errors(source):
    def run():
        try:
            parse(source, set(NAMES))(ENV)
        except ExprError:
            pass
    bounded(run)


# --------------------------------------------------------------------------
# The spec loader


def _load_spec_text(work: Path, data: bytes | str) -> None:
    path = work / "spec.yaml"
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)

    def run():
        try:
            load(path)
        except SpecError as exc:
            assert exc.path == str(path), exc
    bounded(run)


@FUZZ
@given(data=st.binary(max_size=3000))
def test_spec_loader_on_arbitrary_bytes(work, data):
    _load_spec_text(work, data)


@FUZZ
@given(text=mutated_text(MINIMAL))
def test_spec_loader_on_mutations_of_a_valid_spec(work, text):
    _load_spec_text(work, text)


@FUZZ
@given(where=st.sampled_from(['forbids: "filters > 8"', 'pad: "lower(padding)"',
                              'when: "pad == \'valid\'"', '"(batch, rows, cols, filters)"']),
       expression=expressions())
def test_spec_loader_on_arbitrary_expressions(work, where, expression):
    key, _, _ = where.partition('"')
    replacement = f'{key}"{expression}"' if key else f'"{expression}"'
    _load_spec_text(work, MINIMAL.replace(where, replacement))


# --------------------------------------------------------------------------
# The case and result loaders


def _load_file(work: Path, data: bytes, reader, judge: bool = False) -> object | None:
    """``reader`` on ``data``; with ``judge``, the oracle on what it loaded."""
    path = work / "file.npz"
    path.write_bytes(data)

    def run():
        try:
            loaded = reader(path)
        except CaseFileError as exc:
            assert str(exc).startswith(str(path)), exc
            return None
        if judge:
            _judge_if_loaded(loaded)
        return loaded
    return bounded(run)



def good_case_bytes() -> bytes:
    buf = io.BytesIO()
    case = good_case()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(case.meta()).encode(), np.uint8),
             **case.arrays())
    return buf.getvalue()


def _judge_if_loaded(case):
    """A case the loader accepted: the judge computes or refuses with ValueError."""
    if case is None:
        return
    try:
        oracle.forward(case)
    except ValueError:
        pass


@FUZZ
@given(data=st.binary(max_size=4000))
def test_case_loader_on_arbitrary_bytes(work, data):
    _load_file(work, data, Case.load, judge=True)


@FUZZ
@given(data=st.data())
def test_case_loader_on_mutated_archives(work, data):
    base = good_case_bytes()
    _load_file(work, data.draw(mutated_bytes(base)), Case.load, judge=True)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)

ARRAYS = hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex128,
                                     np.dtype("<U2"), np.uint8]),
                    hnp.array_shapes(min_dims=0, max_dims=6, min_side=0, max_side=4))


@FUZZ
@given(field=st.sampled_from(["config", "dtype", "training", "followups", "masking_value",
                              "roundtrip", "unknown_dims", "case_id", "extra"]),
       value=JSON, member=st.sampled_from(["inputs", "kernel", "recurrent_kernel", "bias", "mask",
                                           "initial_h", "cotangent", "dropout_mask", "other"]),
       array=st.none() | ARRAYS)
def test_case_loader_on_structured_mutations(work, field, value, member, array):
    case = good_case()
    meta = case.meta()
    meta[field] = value
    arrays = case.arrays()
    if array is not None:
        arrays[member] = array
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    _load_file(work, buf.getvalue(), Case.load, judge=True)


@FUZZ
@given(data=st.binary(max_size=4000))
def test_result_loader_on_arbitrary_bytes(work, data):
    _load_file(work, data, Outcome.load)


@FUZZ
@given(field=st.sampled_from(["status", "n_outputs", "structure", "dtypes", "error", "detail",
                              "duration_s", "n_followup_outputs", "extra"]),
       value=JSON, member=st.sampled_from(["out0", "out1", "grad_kernel", "followup0_out0",
                                           "weight_bias", "junk"]),
       array=st.none() | ARRAYS, flips=st.data())
def test_result_loader_on_structured_mutations(work, field, value, member, array, flips):
    path = result_file(work, {field: value}, **({member: array} if array is not None else {}))
    data = path.read_bytes()
    if flips.draw(st.booleans()):
        data = flips.draw(mutated_bytes(data))
    _load_file(work, data, Outcome.load)


def test_a_zip_of_many_small_members_is_fuzzed_quickly(work):
    # The member bound holds before any member is read.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(1000):
            z.writestr(f"m{i}.npy", b"")
    assert _load_file(work, buf.getvalue(), Case.load) is None


# --------------------------------------------------------------------------
# The worker protocol's line parsers


@FUZZ
@given(line=st.binary(max_size=2000), want=st.integers(0, 10), strict=st.booleans())
def test_parse_reply_on_arbitrary_bytes(line, want, strict):
    reply = bounded(lambda: parse_reply(line, want, strict))
    assert reply is None or isinstance(reply.get("ok"), bool)


@FUZZ
@given(obj=JSON, want=st.integers(0, 10))
def test_parse_reply_on_json_values(obj, want):
    line = json.dumps(obj).encode()
    reply = bounded(lambda: parse_reply(line, want, True))
    assert reply is None or (reply["id"] == want and isinstance(reply["ok"], bool))


@FUZZ
@given(line=st.binary(max_size=2000) | JSON.map(lambda o: json.dumps(o).encode())
       | st.text(alphabet=string.printable, max_size=200).map(str.encode))
def test_parse_request_raises_only_protocol_errors(line):
    def run():
        try:
            msg = parse_request(line)
        except ProtocolError:
            return
        assert isinstance(msg, dict) and isinstance(msg["op"], str)
    bounded(run)
