"""Safe evaluation of the spec's expressions: a small Python subset, no ``eval``.

An expression is parsed with :mod:`ast` and checked against a whitelist once,
when the spec loads; evaluation walks the tree.  Allowed: literals, names,
tuples and lists, indexing with an integer, arithmetic (+ - * / // % **),
comparisons (including ``is None``), ``and``/``or``/``not``, ``x if c else y``
and calls to the functions in :data:`FUNCTIONS`.  Attribute access, lambdas,
comprehensions and every other construct are refused.
"""
from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping


class ExprError(ValueError):
    """An expression that is malformed or cannot be evaluated."""


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

    def __call__(self, env: Mapping[str, Any]) -> Any:
        try:
            return _eval(self.tree.body, env)
        except ExprError as exc:
            raise ExprError(f"evaluating {self.source!r}: {exc}") from None
        except (TypeError, ValueError, ZeroDivisionError, IndexError, OverflowError,
                MemoryError) as exc:
            raise ExprError(f"evaluating {self.source!r}: {type(exc).__name__}: {exc}") from None


def parse(source: str, known_names: set[str] | frozenset | None = None) -> Expr:
    """Parse and whitelist-check ``source``; unknown names are errors when
    ``known_names`` is given."""
    if not isinstance(source, str):
        raise ExprError(f"expression must be a string, got {type(source).__name__}")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error in {source!r}: {exc.msg}") from None
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
    if known_names is not None:
        unknown = names - set(known_names)
        if unknown:
            raise ExprError(f"unknown name(s) {', '.join(sorted(unknown))} in {source!r}")
    return Expr(source, tree, frozenset(names))


_ALLOWED_NODES = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Tuple, ast.List,
    ast.Subscript, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
    ast.Call, ast.And, ast.Or, *_BINOPS, *_CMPOPS, *_UNARY,
)


# Spec arithmetic is on small shapes; refuse operations that could make a
# malformed spec hang the loader or exhaust memory.
MAX_EXPONENT = 64
MAX_REPEAT = 10_000


def _check_size(op: ast.operator, left: Any, right: Any) -> None:
    if isinstance(op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
        raise ExprError(f"exponent {right} too large (limit {MAX_EXPONENT})")
    if isinstance(op, ast.Mult):
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, tuple)) and isinstance(n, int) and n * max(len(seq), 1) > MAX_REPEAT:
                raise ExprError(f"repetition too large (limit {MAX_REPEAT} items)")


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise ExprError(f"name {node.id!r} is not defined here")
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_eval(e, env) for e in node.elts)
    if isinstance(node, ast.Subscript):
        base = _eval(node.value, env)
        index = _eval(node.slice, env)
        if not isinstance(index, int) or isinstance(index, bool):
            raise ExprError(f"index must be an integer, got {index!r}")
        return base[index]
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env), _eval(node.right, env)
        _check_size(node.op, left, right)
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for v in node.values:
                result = _eval(v, env)
                if not result:
                    return result
            return result
        result = False
        for v in node.values:
            result = _eval(v, env)
            if result:
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, env)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, ast.Call):
        return FUNCTIONS[node.func.id](*(_eval(a, env) for a in node.args))
    raise ExprError(f"{type(node).__name__} not allowed")
