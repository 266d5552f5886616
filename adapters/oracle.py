"""The float64 oracle behind the adapter interface (forward only).

The oracle is the suite's judge (``convlstm_conformance.oracle``); this entry
lets it run as an implementation too.  Its numbers are then judged against a
second float64 formulation (``convlstm_conformance.oracle_twin``, see
``is_judge``), so every clause it judges others on is checked independently.
"""
from __future__ import annotations

import time
import traceback

import numpy as np

from convlstm_conformance import oracle
from convlstm_conformance.features import Capabilities, activations
from convlstm_conformance.model import (ADAPTER_ERROR, CALL, OK, RAISED, REFUSED, Adapter, Case,
                                        ErrorInfo, Outcome)
from convlstm_conformance.registry import AdapterEntry


class NumpyOracle(Adapter):
    """The float64 oracle as an implementation."""

    name = "oracle"
    is_judge = True      # judged against core/oracle_twin.py, not against itself

    def capabilities(self) -> Capabilities:
        names = activations() | {None}
        return Capabilities(
            activation=names, recurrent_activation=names,
            # It computes in float64 only; it judges every other format.
            dtype=frozenset({"float64"}),
            mask=True, initial_state=True, go_backwards=True, dropout_injection=True,
            stateful=True, masking_layer=True, argument_validation=False)

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        if case.kernel is None or case.recurrent_kernel is None:
            return Outcome(status=REFUSED, detail="the oracle has no initializers: give it weights")
        if case.roundtrip:
            return Outcome(status=REFUSED, detail="the oracle has nothing to serialize")
        try:
            results = oracle.forward_calls(case)
        except ValueError as exc:
            # The oracle checks only what it needs to compute; argument errors
            # are the frameworks' business, so report them at call time.
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CALL),
                           duration_s=time.perf_counter() - start)
        except Exception:  # a bug in the oracle itself
            return Outcome(status=ADAPTER_ERROR, detail=traceback.format_exc(),
                           duration_s=time.perf_counter() - start)
        state = bool(case.config.get("return_state", False))
        flat = [[r.output, r.h, r.c] if state else [r.output] for r in results]
        return Outcome(status=OK, outputs=flat[0], structure="list" if state else "tensor",
                       dtypes=[str(np.asarray(a).dtype) for a in flat[0]],
                       followup_outputs=flat[1:], duration_s=time.perf_counter() - start)


ENTRY = AdapterEntry("oracle", f"{__name__}:NumpyOracle", requires=("numpy", "scipy"),
                     isolate=False)
