"""Failures in the terminal as the report says them: one block each.

A failing conformance test's message already says everything (clause,
adapter, minimal configuration, error against budget, reproduction:
``harness.failure_message``); pytest would print it after a hundred lines
of traceback through the harness and Hypothesis.  :func:`concise` replaces
the traceback of an assertion failure by its message alone.  A failure that
is not an assertion (a bug in the suite or in an adapter's glue) keeps its
traceback, and so does every failure when the run asks for one with
pytest's own ``--tb`` (``--tb=short``, ``--tb=long``, ...).
"""
from __future__ import annotations

import pytest

#: pytest's --tb when none is given: the suite then shows the blocks alone.
DEFAULT_TB = "auto"


def traceback_requested(config) -> bool:
    return getattr(config.option, "tbstyle", DEFAULT_TB) != DEFAULT_TB


def _message(exc: BaseException) -> str | None:
    """What an assertion-like failure says, without pytest's introspection
    (``assert ...`` and its ``where`` lines) or Hypothesis' notes; None for
    an exception that is not one."""
    if isinstance(exc, BaseExceptionGroup):
        parts = [_message(e) for e in exc.exceptions]
        if any(p is None for p in parts):
            return None
        return (f"{len(parts)} distinct failures:\n\n" + "\n\n".join(parts)) if len(parts) > 1 \
            else parts[0]
    if isinstance(exc, pytest.fail.Exception):
        return exc.msg
    if isinstance(exc, AssertionError):
        text = str(exc)
        # pytest's rewritten assert appends its introspection after the message.
        head, sep, _ = text.partition("\nassert ")
        return head if sep or text else "assertion failed (no message)"
    return None


def concise(report, excinfo, config) -> None:
    """Replace the failed ``report``'s traceback by its message, unless a
    traceback was asked for or the failure is not an assertion."""
    if not report.failed or excinfo is None or traceback_requested(config):
        return
    if getattr(report, "wasxfail", None) is not None:
        return
    message = _message(excinfo.value)
    if message is not None:
        report.longrepr = message
