"""Every input of the hostile corpus (tests/hostile_corpus.py) ends in the
documented error of its reader, with a message naming the file and what is
wrong, or is handled cleanly: never another exception, a hang or a memory
blow-up (each input runs under TIME_LIMIT_S and MEMORY_LIMIT_BYTES)."""
from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np
import pytest

from tests.bounds import run_bounded
from tests.hostile_corpus import CLEAN, CORPUS, KINDS, Hostile, good_case

TIME_LIMIT_S = 20
MEMORY_LIMIT_BYTES = 96 << 20    # peak of Python and NumPy allocations while reading one input


def _read(entry: Hostile, target) -> str | None:
    """Hand ``target`` to the reader of its kind: the error message of the
    documented error type, or None when it was read without one."""
    from convlstm_conformance import oracle
    from convlstm_conformance.model import ADAPTER_ERROR, Case, CaseFileError, Outcome
    from convlstm_conformance.registry import Guarded
    from convlstm_conformance.reports import history, records
    from convlstm_conformance.spec import SpecError, load
    from convlstm_conformance.worker import ProtocolError, parse_reply, parse_request
    kind = entry.kind
    try:
        if kind == "spec":
            load(target)
        elif kind == "case":
            Case.load(target)
        elif kind == "result":
            Outcome.load(target)
        elif kind == "judge":
            oracle.forward(target)
        elif kind == "adapter":
            case = good_case()
            case.dtype = "float64"
            outcome = Guarded(target()).run(case)
            assert outcome.status == ADAPTER_ERROR, f"garbage passed as {outcome.status}"
            return outcome.detail
        elif kind == "reply":
            assert parse_reply(target, 7, strict_ids=True) is None, "junk read as the reply"
        elif kind == "request":
            parse_request(target)
        elif kind == "history":
            history.runs(target)
            history.series(target)      # every run's cells, versions and clauses
        elif kind == "records":
            records.load(target)
        else:
            raise AssertionError(f"no reader for kind {kind!r}")
    except (SpecError, CaseFileError, ProtocolError, history.HistoryError,
            records.InputError) as exc:
        return _named(entry, target, str(exc))
    except ValueError as exc:
        if kind != "judge":
            raise
        return str(exc)
    return None


def _named(entry: Hostile, target, message: str) -> str:
    """A file's error names the file first."""
    if isinstance(target, Path) and not message.startswith(str(target)):
        raise AssertionError(f"{entry.id}: the message does not start with the file's path "
                             f"{target}: {message[:300]}")
    return message


@pytest.mark.parametrize("entry", CORPUS, ids=[e.id for e in CORPUS])
def test_hostile_input_is_handled_cleanly(entry: Hostile, tmp_path):
    target = entry.build(tmp_path)
    message = run_bounded(lambda: _read(entry, target), TIME_LIMIT_S, MEMORY_LIMIT_BYTES)
    if entry.expect is CLEAN:
        assert message is None or entry.kind == "records", \
            f"{entry.id} should be read cleanly, got: {message}"
        return
    assert message is not None, f"{entry.id} was accepted; expected /{entry.expect}/"
    assert re.search(entry.expect, message, re.S), \
        f"{entry.id}: expected /{entry.expect}/, got: {message[:600]}"
    assert "Traceback" not in message or entry.kind == "adapter", message[:600]


def test_the_corpus_covers_every_class():
    counts = collections.Counter(e.kind for e in CORPUS)
    assert set(counts) == set(KINDS), f"classes without inputs: {set(KINDS) - set(counts)}"
    assert len(CORPUS) >= 100, f"only {len(CORPUS)} hostile inputs"
    assert len({e.id for e in CORPUS}) == len(CORPUS), "two inputs share an id"


def test_a_good_case_passes_the_same_readers(tmp_path):
    """The corpus's base case is well formed: each hostile variant breaks one thing."""
    from convlstm_conformance import oracle
    from convlstm_conformance.model import Case
    case = Case.load(good_case().save(tmp_path / "c.npz"))
    assert oracle.forward(case).output.shape == (1, 4, 4, 2)
    np.testing.assert_array_equal(case.inputs, good_case().inputs)


def test_every_bound_is_documented_with_its_value():
    """docs/limits.md lists every MAX_* constant of the readers with the
    value the code uses, and every constant its tables name exists."""
    from convlstm_conformance import expr, model, spec, worker
    from convlstm_conformance.reports import history
    modules = (spec, expr, model, worker, history)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "limits.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", doc, re.M))
    for module in modules:
        for name in dir(module):
            if name.startswith("MAX_"):
                assert name in rows, f"{module.__name__}.{name} is not in docs/limits.md"
    for name, cell in rows.items():
        owners = [m for m in modules if hasattr(m, name)]
        assert owners, f"docs/limits.md names {name}, which no reader defines"
        value = getattr(owners[0], name)
        documented = float(re.match(r"[\d.]+", cell.replace(",", "")).group())
        assert documented == value, f"docs/limits.md gives {name} = {documented}, the code {value}"
