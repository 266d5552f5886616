"""The spec's expression evaluator (core/expr.py): what it computes, what it refuses."""
from __future__ import annotations

import pytest

from convlstm_conformance.expr import FUNCTIONS, Expr, ExprError, parse

ENV = {
    "strides": (2, 1), "dilation_rate": (1, 1), "kernel_size": (3, 2), "rows": 7, "cols": 5,
    "padding": "Same", "data_format": None, "filters": 4, "return_state": True,
}


def ev(source: str, env=ENV, known=None):
    return parse(source, known)(env)


# --------------------------------------------------------------------------
# What it computes


@pytest.mark.parametrize("source, expected", [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("7 - 10", -3),
    ("7 / 2", 3.5),
    ("7 // 2", 3),
    ("-7 // 2", -4),          # floor division rounds toward -inf, as Python does
    ("7 % 3", 1),
    ("2 ** 10", 1024),
    ("-rows", -7),
    ("+rows", 7),
    ("rows * cols - filters", 31),
])
def test_arithmetic(source, expected):
    got = ev(source)
    assert got == expected and type(got) is type(expected), \
        f"{source!r}: expected {expected!r}, got {got!r}"


@pytest.mark.parametrize("source, expected", [
    ("rows == 7", True), ("rows != 7", False), ("rows < 8", True), ("rows <= 6", False),
    ("rows > 6", True), ("rows >= 8", False), ("'a' in 'abc'", True), ("3 not in strides", True),
    ("2 in strides", True),
])
def test_comparisons(source, expected):
    assert ev(source) is expected, f"{source!r}: expected {expected}"


@pytest.mark.parametrize("source, expected", [
    ("1 < 2 < 3", True),
    ("1 < 3 < 2", False),      # the second link fails
    ("3 > 2 > 1 > 0", True),
    ("1 < rows <= 7", True),
    ("1 < rows < 7", False),
    ("0 < 1 == 1", True),      # mixed operators chain pairwise
])
def test_chained_comparisons(source, expected):
    assert ev(source) is expected, f"{source!r}: expected {expected}"


def test_chained_comparison_stops_at_the_first_false_link():
    # Python semantics: `1 > 2 < (1/0)` never evaluates the division.
    assert ev("1 > 2 < 1 / 0") is False


@pytest.mark.parametrize("source, expected", [
    ("data_format is None", True),
    ("data_format is not None", False),
    ("padding is None", False),
    ("padding is not None", True),
])
def test_is_none(source, expected):
    assert ev(source) is expected, f"{source!r}: expected {expected}"


@pytest.mark.parametrize("source, expected", [
    ("'yes' if rows > 5 else 'no'", "yes"),
    ("'yes' if rows > 9 else 'no'", "no"),
    ("1 if return_state else 2", 1),
    # Only the chosen branch is evaluated.
    ("1 if True else 1 / 0", 1),
    ("1 / 0 if False else 2", 2),
    # Nested conditionals associate to the right.
    ("'a' if rows < 0 else 'b' if rows < 10 else 'c'", "b"),
])
def test_if_else(source, expected):
    assert ev(source) == expected, f"{source!r}: expected {expected!r}"


@pytest.mark.parametrize("source, expected", [
    ("True and 3", 3), ("0 and 1 / 0", 0), ("0 or 5", 5), ("2 or 1 / 0", 2),
    ("not 0", True), ("not rows", False), ("'' or None", None),
])
def test_boolean_operators_short_circuit_and_return_operands(source, expected):
    assert ev(source) == expected, f"{source!r}: expected {expected!r}"


def test_tuples_and_lists_evaluate_to_tuples():
    assert ev("(rows, cols, 1)") == (7, 5, 1)
    assert ev("[rows, cols]") == (7, 5)
    assert ev("(1,)") == (1,)
    assert ev("()") == ()
    # A list literal compares equal to the tuple a normalised argument holds.
    assert ev("strides == [2, 1]") is True


@pytest.mark.parametrize("source, expected", [
    ("strides[0]", 2), ("strides[1]", 1), ("strides[-1]", 1), ("kernel_size[0] * kernel_size[1]", 6),
    ("(10, 20, 30)[1]", 20), ("(rows, cols)[filters - 3]", 5), ("'abc'[2]", "c"),
])
def test_indexing(source, expected):
    assert ev(source) == expected, f"{source!r}: expected {expected!r}"


@pytest.mark.parametrize("source, expected", [
    ("floor(7 / 2)", 3), ("floor(-7 / 2)", -4), ("ceil(7 / 2)", 4), ("ceil(-7 / 2)", -3),
    ("ceil(rows / strides[0])", 4), ("floor(6 / 3)", 2),
    ("min(3, 1, 2)", 1), ("max(strides)", 2), ("min(strides)", 1), ("max(1, rows)", 7),
    ("abs(-3)", 3), ("len(kernel_size)", 2),
    ("lower(padding)", "same"), ("lower('VALID')", "valid"), ("lower(data_format)", None),
    ("lower(3)", 3),
])
def test_functions(source, expected):
    got = ev(source)
    assert got == expected and type(got) is type(expected), \
        f"{source!r}: expected {expected!r}, got {got!r}"


def test_floor_and_ceil_return_ints():
    # Shapes are built from them: a float 3.0 in a shape tuple would be a bug.
    assert type(ev("floor(7 / 2)")) is int and type(ev("ceil(7 / 2)")) is int


def test_function_whitelist_is_exactly_the_documented_one():
    assert set(FUNCTIONS) == {"floor", "ceil", "min", "max", "abs", "len", "lower"}


def test_output_size_formula_from_the_spec():
    # SHAPE-VALID: floor((n - d*(k-1) - 1) / s) + 1 with n=7, k=3, d=1, s=2 gives 3.
    src = "floor((rows - dilation_rate[0] * (kernel_size[0] - 1) - 1) / strides[0]) + 1"
    assert ev(src) == 3


def test_names_lists_the_names_read_and_not_the_functions():
    e = parse("max(strides) > 1 and lower(padding) == 'same' or rows")
    assert isinstance(e, Expr)
    assert e.names == frozenset({"strides", "padding", "rows"}), e.names
    assert e.source == "max(strides) > 1 and lower(padding) == 'same' or rows"


def test_surrounding_whitespace_is_ignored():
    # YAML block scalars leave a trailing newline.
    assert parse("  rows + 1\n")({"rows": 1}) == 2


def test_known_names_accepts_the_names_it_lists():
    assert parse("rows + cols", {"rows", "cols"})({"rows": 2, "cols": 3}) == 5


def test_a_parsed_expression_is_reusable_across_environments():
    e = parse("rows * 2")
    assert (e({"rows": 1}), e({"rows": 5})) == (2, 10)


# --------------------------------------------------------------------------
# What it refuses, at parse time


@pytest.mark.parametrize("source, fragment", [
    ("padding.lower", "Attribute not allowed"),
    ("().__class__", "Attribute not allowed"),
    ("().__class__.__bases__[0].__subclasses__()", "not allowed"),
    ("(1).real", "Attribute not allowed"),
    ("lambda: 1", "Lambda not allowed"),
    ("lambda x: x", "Lambda not allowed"),
    ("[x for x in strides]", "ListComp not allowed"),
    ("(x for x in strides)", "GeneratorExp not allowed"),
    ("{x for x in strides}", "SetComp not allowed"),
    ("{x: 1 for x in strides}", "DictComp not allowed"),
    ("strides[0:1]", "Slice not allowed"),
    ("strides[:]", "Slice not allowed"),
    ("strides[::-1]", "Slice not allowed"),
    ("{1: 2}", "Dict not allowed"),
    ("{1, 2}", "Set not allowed"),
    ("(y := 1)", "NamedExpr not allowed"),
    ("f'{rows}'", "JoinedStr not allowed"),
    ("max(*strides)", "Starred not allowed"),
    ("rows @ cols", "MatMult"),
    ("rows << 1", "LShift"),
    ("rows & 1", "BitAnd"),
    ("~rows", "Invert"),
])
def test_refused_constructs(source, fragment):
    with pytest.raises(ExprError) as info:
        parse(source)
    msg = str(info.value)
    assert fragment in msg, f"{source!r}: expected {fragment!r} in the message, got {msg!r}"
    assert repr(source) in msg or source in msg, f"{source!r}: the message should quote it: {msg!r}"


@pytest.mark.parametrize("source, callee", [
    ("__import__('os')", "__import__"),
    ("open('/etc/passwd')", "open"),
    ("eval('1')", "eval"),
    ("exec('x = 1')", "exec"),
    ("getattr(padding, 'lower')", "getattr"),
    ("type(rows)", "type"),
    ("int(rows)", "int"),
    ("padding.lower()", "padding.lower"),
    ("(lambda: 1)()", "lambda: 1"),
    ("strides[0](1)", "strides[0]"),
    ("max(1, 2)(3)", "max(1, 2)"),
])
def test_calls_outside_the_whitelist_are_refused(source, callee):
    with pytest.raises(ExprError) as info:
        parse(source)
    msg = str(info.value)
    assert f"call to {callee!r} not allowed" in msg, f"{source!r}: got {msg!r}"
    # The message tells the spec author what is allowed instead.
    assert "allowed: abs, ceil, floor, len, lower, max, min" in msg, msg


def test_a_nested_forbidden_call_inside_an_allowed_one_is_refused():
    with pytest.raises(ExprError, match=r"call to '__import__' not allowed"):
        parse("max(1, __import__('os'))")


@pytest.mark.parametrize("source", ["max(1, key=abs)", "min(strides, default=0)", "max(*strides, key=abs)"])
def test_keyword_arguments_are_refused(source):
    with pytest.raises(ExprError, match=r"keyword arguments not allowed|Starred not allowed"):
        parse(source)


def test_keyword_argument_message():
    with pytest.raises(ExprError) as info:
        parse("max(1, key=abs)")
    assert str(info.value) == "keyword arguments not allowed in 'max(1, key=abs)'"


@pytest.mark.parametrize("source", ["1 +", "rows ==", "(1, 2", "if", "rows = 1", "import os", "x; y", ""])
def test_syntax_errors(source):
    with pytest.raises(ExprError) as info:
        parse(source)
    msg = str(info.value)
    assert msg.startswith("syntax error in "), msg
    assert repr(source) in msg, f"the message should quote {source!r}: {msg!r}"


@pytest.mark.parametrize("value", [5, None, ["rows"], b"rows"])
def test_non_string_sources_are_refused(value):
    with pytest.raises(ExprError, match=r"expression must be a string, got "):
        parse(value)


def test_unknown_names_are_refused_when_known_names_is_given():
    with pytest.raises(ExprError) as info:
        parse("rows + colz + zz", {"rows", "cols"})
    assert str(info.value) == "unknown name(s) colz, zz in 'rows + colz + zz'"


def test_unknown_names_are_accepted_without_known_names():
    assert parse("anything + 1").names == frozenset({"anything"})


def test_function_names_need_not_be_in_known_names():
    assert parse("max(rows, 1)", {"rows"}).names == frozenset({"rows"})


def test_a_bare_function_name_used_as_a_value_is_an_unknown_name():
    with pytest.raises(ExprError, match=r"unknown name|not allowed"):
        parse("max + 1", {"rows"})


# --------------------------------------------------------------------------
# Evaluation errors


@pytest.mark.parametrize("source, env, kind", [
    ("rows / 0", {"rows": 1}, "ZeroDivisionError"),
    ("rows // (cols - cols)", {"rows": 1, "cols": 2}, "ZeroDivisionError"),
    ("rows % 0", {"rows": 1}, "ZeroDivisionError"),
    ("strides[5]", {"strides": (1, 2)}, "IndexError"),
    ("len(rows)", {"rows": 3}, "TypeError"),
    ("padding < 1", {"padding": "same"}, "TypeError"),
    ("rows[0]", {"rows": 3}, "TypeError"),
    ("floor(x)", {"x": float("nan")}, "ValueError"),
    ("ceil(x)", {"x": float("inf")}, "OverflowError"),
    ("max(())", {}, "ValueError"),
])
def test_evaluation_errors_name_the_expression(source, env, kind):
    e = parse(source)
    with pytest.raises(ExprError) as info:
        e(env)
    msg = str(info.value)
    assert msg.startswith(f"evaluating {source!r}: {kind}: "), f"{source!r}: got {msg!r}"


def test_evaluation_error_is_a_value_error():
    # Callers catch ValueError for every invalid-spec condition.
    assert issubclass(ExprError, ValueError)


def test_missing_name_raises_expr_error():
    with pytest.raises(ExprError, match=r"name 'cols' is not defined"):
        parse("rows + cols")({"rows": 1})


def test_missing_name_message_quotes_the_expression():
    with pytest.raises(ExprError) as info:
        parse("rows + cols")({"rows": 1})
    assert "'rows + cols'" in str(info.value), str(info.value)


def test_non_integer_index_message_quotes_the_expression():
    with pytest.raises(ExprError) as info:
        parse("strides['a']")({"strides": (1, 2)})
    assert "strides['a']" in str(info.value), str(info.value)


def test_non_integer_index_is_refused():
    with pytest.raises(ExprError, match=r"index must be an integer, got 'a'"):
        parse("strides['a']")({"strides": (1, 2)})
    with pytest.raises(ExprError, match=r"index must be an integer, got 0.5"):
        parse("strides[0.5]")({"strides": (1, 2)})


# --------------------------------------------------------------------------
# Bounds: a hostile expression is refused quickly, never hangs or fills memory

from convlstm_conformance.expr import ExprLimitError  # noqa: E402


@pytest.mark.parametrize("source, fragment", [
    ("-" * 3000 + "1", "characters is too long"),
    ("-" * 1500 + "1", "levels deep"),
    ("1" + "+1" * 900, "levels deep"),
    ("not " * 400 + "x", "levels deep"),
    ("max(" * 60 + "1" + ")" * 60, "levels deep"),
    ("9" * 400, "integer literal of 1329 bits"),
])
def test_oversized_expressions_are_refused_at_parse(source, fragment):
    with pytest.raises(ExprLimitError) as info:
        parse(source)
    assert fragment in str(info.value), str(info.value)
    assert len(str(info.value)) < 500, "the message quotes a shortened expression"


@pytest.mark.parametrize("source, env, fragment", [
    # Each exponent is small; together they tower past any memory.
    ("((((2 ** 64) ** 64) ** 64) ** 64) ** 64", {}, "past 1024 bits"),
    ("(x ** 64) ** 64", {"x": 3}, "past 1024 bits"),
    ("x * x * x * x * x * x * x * x * x * x * x * x * x * x * x * x * x", {"x": 2 ** 63},
     "product past 1024 bits"),
    ("2 ** 100", {}, "exponent 100 too large"),
    ("(0,) * 10000 + (0,)", {}, "more than 10000 items"),
    ("t + t", {"t": (0,) * 6000}, "more than 10000 items"),
    ("((0,) * 5000,) * 3", {}, "repetition too large"),
    ("'a' * 10000 * 2", {}, "repetition too large"),
    (" and ".join(["(0,) * 9000 == (0,) * 9000"] * 6), {}, "more than 100000 steps"),
])
def test_evaluations_past_a_bound_are_refused(source, env, fragment):
    with pytest.raises(ExprLimitError) as info:
        parse(source)(env)
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("source, fragment", [
    ("1j", "complex literal not allowed"),
    ("b'x'", "bytes literal not allowed"),
    ("...", "ellipsis literal not allowed"),
])
def test_literals_outside_the_value_types_are_refused(source, fragment):
    with pytest.raises(ExprError, match=fragment):
        parse(source)


def test_a_nul_byte_is_a_syntax_error():
    with pytest.raises(ExprError, match=r"^syntax error in 'rows\\x00'"):
        parse("rows\0")


def test_string_formatting_is_refused_at_parse_and_at_evaluation():
    # "%999999999d" % 1 would allocate a gigabyte.
    with pytest.raises(ExprError, match="string formatting with % is not allowed"):
        parse("'%999999999d' % rows")
    with pytest.raises(ExprError, match="string formatting with % is not allowed"):
        parse("padding % rows")({"padding": "%999999999d", "rows": 1})
    assert parse("rows % 3")({"rows": 7}) == 1


def test_values_inside_the_bounds_still_compute():
    assert parse("2 ** 64 * 2 ** 64")({}) == 2 ** 128
    assert len(parse("(0,) * 5000 + (1,) * 5000")({})) == 10_000
    assert parse("x ** 2")({"x": 2 ** 500}) == 2 ** 1000


def test_evaluation_errors_name_the_origin_when_it_is_known():
    e = parse("rows ** 99")
    import dataclasses
    located = dataclasses.replace(e, origin="spec.yaml:7")
    with pytest.raises(ExprLimitError) as info:
        located({"rows": 2})
    assert str(info.value).startswith("spec.yaml:7: evaluating 'rows ** 99': exponent 99"), \
        str(info.value)
