"""Safe evaluation of the spec's expressions: a small Python subset, no ``eval``.

An expression is parsed with :mod:`ast` and checked against a whitelist once,
when the spec loads; evaluation walks the tree.  Allowed: literals, names,
tuples and lists, indexing with an integer, arithmetic (+ - * / // % **),
comparisons (including ``is None``), ``and``/``or``/``not``, ``x if c else y``
and calls to the functions in :data:`FUNCTIONS`.  Attribute access, lambdas,
comprehensions and every other construct are refused.

A spec is untrusted input, so parsing and evaluation are bounded (the figures
are in ``docs/limits.md``): the source length, the nesting depth of the tree,
every integer's size, every string's and tuple's item count, and the steps one
evaluation may take.  Crossing a bound raises :class:`ExprLimitError`.
"""
from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping


class ExprError(ValueError):
    """An expression that is malformed or cannot be evaluated."""


class ExprLimitError(ExprError):
    """An expression that crosses one of the bounds below: a defect of the
    spec itself, whatever the values it is evaluated on."""


# Spec arithmetic is on small shapes: the shipped spec's longest expression has
# 126 characters, its deepest tree 12 levels, its largest value a few thousand.
MAX_EXPR_CHARS = 2_000      # source length
MAX_EXPR_DEPTH = 40         # nesting of the parsed tree (evaluation recurses on it)
MAX_EXPONENT = 64           # |exponent| of **
MAX_INT_BITS = 1_024        # any integer, literal or computed (floats end near 2**1024)
MAX_ITEMS = 10_000          # items of a string or tuple, nested ones counted
MAX_EVAL_STEPS = 100_000    # nodes visited plus items touched, per evaluation


def _shorten(source: str, limit: int = 120) -> str:
    """``source`` quoted, cut to ``limit`` characters: messages stay readable
    whatever the length of a hostile expression."""
    if len(source) <= limit:
        return repr(source)
    return repr(source[:limit]) + f"... ({len(source)} characters)"


def _lower(x: Any) -> Any:
    return x.lower() if isinstance(x, str) else x


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "floor": lambda x: int(math.floor(x)),
    "ceil": lambda x: int(math.ceil(x)),
    "min": min,
    "max": max,
    "abs": abs,
    "len": len,
    "lower": _lower,
}

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv,
           ast.Mod: operator.mod, ast.Pow: operator.pow}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
           ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
           ast.Is: operator.is_, ast.IsNot: operator.is_not,
           ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}


@dataclass(frozen=True)
class Expr:
    """A checked expression: its source text and the names it reads."""

    source: str
    tree: ast.Expression
    names: frozenset
    # Where the expression comes from ("spec.yaml:42"), prefixed to evaluation errors.
    origin: str = ""

    def __call__(self, env: Mapping[str, Any]) -> Any:
        where = f"{self.origin}: " if self.origin else ""
        try:
            return _eval(self.tree.body, env, _Budget())
        except ExprError as exc:
            raise type(exc)(f"{where}evaluating {_shorten(self.source)}: {exc}") from None
        except (TypeError, ValueError, ZeroDivisionError, IndexError, KeyError, OverflowError,
                MemoryError, RecursionError) as exc:
            raise ExprError(f"{where}evaluating {_shorten(self.source)}: "
                            f"{type(exc).__name__}: {exc}") from None


def parse(source: str, known_names: set[str] | frozenset | None = None) -> Expr:
    """Parse and whitelist-check ``source``; unknown names are errors when
    ``known_names`` is given."""
    if not isinstance(source, str):
        raise ExprError(f"expression must be a string, got {type(source).__name__}")
    if len(source) > MAX_EXPR_CHARS:
        raise ExprLimitError(f"expression of {len(source)} characters is too long (limit "
                             f"{MAX_EXPR_CHARS}): {_shorten(source)}")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error in {source!r}: {exc.msg}") from None
    except ValueError as exc:       # a NUL byte, on Python versions that say so this way
        raise ExprError(f"syntax error in {source!r}: {exc}") from None
    except (RecursionError, MemoryError):
        raise ExprLimitError(f"expression nested too deeply for the parser (limit "
                             f"{MAX_EXPR_DEPTH} levels): {_shorten(source)}") from None
    depth = _depth(tree)
    if depth > MAX_EXPR_DEPTH:
        raise ExprLimitError(f"expression nested {depth} levels deep (limit {MAX_EXPR_DEPTH}): "
                             f"{_shorten(source)}")
    names: set[str] = set()
    callees = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            # A function name used as a value ("max + 1") is an unknown name.
            if id(node) not in callees:
                names.add(node.id)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise ExprError(f"call to {what!r} not allowed in {source!r}; "
                                f"allowed: {', '.join(sorted(FUNCTIONS))}")
            if node.keywords:
                raise ExprError(f"keyword arguments not allowed in {source!r}")
        elif not isinstance(node, _ALLOWED_NODES):
            raise ExprError(f"{type(node).__name__} not allowed in {source!r}")
        elif isinstance(node, ast.Constant):
            _check_constant(node.value, source)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) \
                and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            raise ExprError(f"string formatting with % is not allowed in {_shorten(source)}")
    if known_names is not None:
        unknown = names - set(known_names)
        if unknown:
            raise ExprError(f"unknown name(s) {', '.join(sorted(unknown))} in {source!r}")
    return Expr(source, tree, frozenset(names))


def _depth(tree: ast.AST) -> int:
    """Nesting depth, computed without recursion (the tree may be deep)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _check_constant(value: Any, source: str) -> None:
    if value is None or isinstance(value, (bool, float)):
        return
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise ExprLimitError(f"integer literal of {value.bit_length()} bits (limit "
                                 f"{MAX_INT_BITS}) in {_shorten(source)}")
        return
    if isinstance(value, str):
        return                      # its length is bounded by MAX_EXPR_CHARS
    raise ExprError(f"{type(value).__name__} literal not allowed in {_shorten(source)}")


_ALLOWED_NODES = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Tuple, ast.List,
    ast.Subscript, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
    ast.Call, ast.And, ast.Or, *_BINOPS, *_CMPOPS, *_UNARY,
)


class _Budget:
    """Steps left to one evaluation: each node visited costs one, each item of
    a string or tuple an operation builds or compares costs one more."""

    def __init__(self, steps: int = MAX_EVAL_STEPS):
        self.left = steps

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise ExprLimitError(f"evaluation takes more than {MAX_EVAL_STEPS} steps")


def _size(value: Any, cap: int = MAX_ITEMS + 1) -> int:
    """Items in ``value``, nested ones counted; counting stops past ``cap``."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, (tuple, list)):
        return 1
    total, stack = 0, [value]
    while stack and total <= cap:
        v = stack.pop()
        total += len(v)
        for e in v:
            if isinstance(e, str):
                total += len(e)
            elif isinstance(e, (tuple, list)):
                stack.append(e)
    return total


def _check_items(n: int) -> None:
    if n > MAX_ITEMS:
        raise ExprLimitError(f"a string or tuple of more than {MAX_ITEMS} items (limit {MAX_ITEMS})")


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ExprLimitError(f"integer of {value.bit_length()} bits (limit {MAX_INT_BITS})")
    return value


def _check_binop(op: ast.operator, left: Any, right: Any, budget: _Budget) -> None:
    """Refuse, before computing it, a result past the bounds."""
    sized = (str, tuple, list)
    if isinstance(op, ast.Pow) and isinstance(right, (int, float)) and not isinstance(right, bool):
        if abs(right) > MAX_EXPONENT:
            raise ExprLimitError(f"exponent {right} too large (limit {MAX_EXPONENT})")
        if isinstance(left, int) and isinstance(right, int) and right > 0 \
                and left.bit_length() * right > MAX_INT_BITS:
            raise ExprLimitError(f"{left.bit_length()}-bit integer to the power {right}: "
                                 f"past {MAX_INT_BITS} bits")
    elif isinstance(op, ast.Mult):
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, sized) and isinstance(n, int) and not isinstance(n, bool):
                if n * max(_size(seq), 1) > MAX_ITEMS:
                    raise ExprLimitError(f"repetition too large (limit {MAX_ITEMS} items)")
                budget.spend(max(n, 0) * _size(seq))
        if isinstance(left, int) and isinstance(right, int) \
                and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise ExprLimitError(f"product past {MAX_INT_BITS} bits")
    elif isinstance(op, ast.Add) and isinstance(left, sized) and isinstance(right, sized):
        n = _size(left) + _size(right)
        _check_items(n)
        budget.spend(n)
    elif isinstance(op, ast.Mod) and isinstance(left, str):
        # str % args is printf-style formatting: "%999999999d" allocates at will.
        raise ExprError("string formatting with % is not allowed")


def _eval(node: ast.AST, env: Mapping[str, Any], budget: _Budget) -> Any:
    budget.spend(1)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise ExprError(f"name {node.id!r} is not defined here")
    if isinstance(node, (ast.Tuple, ast.List)):
        out = tuple(_eval(e, env, budget) for e in node.elts)
        n = _size(out)
        _check_items(n)
        budget.spend(n)
        return out
    if isinstance(node, ast.Subscript):
        base = _eval(node.value, env, budget)
        index = _eval(node.slice, env, budget)
        if not isinstance(index, int) or isinstance(index, bool):
            raise ExprError(f"index must be an integer, got {index!r:.80}")
        return base[index]
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env, budget), _eval(node.right, env, budget)
        _check_binop(node.op, left, right, budget)
        return _check_int(_BINOPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, env, budget))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for v in node.values:
                result = _eval(v, env, budget)
                if not result:
                    return result
            return result
        result = False
        for v in node.values:
            result = _eval(v, env, budget)
            if result:
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env, budget)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, env, budget)
            # Comparing (or searching) touches at most every item of both.
            budget.spend(_size(left) + _size(right))
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        if _eval(node.test, env, budget):
            return _eval(node.body, env, budget)
        return _eval(node.orelse, env, budget)
    if isinstance(node, ast.Call):
        args = [_eval(a, env, budget) for a in node.args]
        budget.spend(sum(_size(a) for a in args))
        return _check_int(FUNCTIONS[node.func.id](*args))
    raise ExprError(f"{type(node).__name__} not allowed")
