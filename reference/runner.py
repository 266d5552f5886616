"""The run protocol both references share: validate, compute, report.

A case is validated with :mod:`.config` (construction errors, call errors
and refusals become outcomes, as a framework's layer would raise them), the
backend computes it (:meth:`ReferenceRunner._compute`), later calls of a
stateful layer follow, and the arrays come back as an :class:`Outcome`.  The
backends subclass it (``torch_ref.TorchReference``, ``jax_ref.JaxReference``);
the suite's adapters subclass those with their capability declaration.
"""
from __future__ import annotations

import time
import traceback
from typing import Any

import numpy as np

from convlstm_conformance.model import (ADAPTER_ERROR, CALL, CONSTRUCT, OK, RAISED, REFUSED,
                                        Adapter, Case, ErrorInfo, Outcome, Refused)
from convlstm_conformance.reference.config import (Geometry, LayerSpec, check_case, dtypes,
                                                   geometry, parse_config)


class ReferenceRunner(Adapter):
    """The run() protocol both references share: validate, compute, report.

    Subclasses implement :meth:`_compute`, which gets validated inputs and
    returns ``(outputs, grads, dtypes)``: output, h and c and the gradients as
    float64 NumPy arrays in the case's layouts, and the dtype names of the
    framework tensors they were read from (what the layer really returned).
    """

    device = "cpu"
    framework = ""        # "torch" or "jax": names the adapter, ref-<framework>-<device>

    def __init__(self, device: str = "cpu") -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.device = device
        self.name = f"ref-{self.framework}-{device}"
        self._state: dict[Any, Any] = {}   # stateful carry, keyed by layer identity

    def reset_states(self) -> None:
        """Forget the state a stateful layer carried between calls."""
        self._state.clear()

    reset = reset_states   # the worker protocol's name

    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        # Every case is a new layer object: a stateful layer carries state only
        # between the calls of one case (Case.followups).
        self.reset_states()
        if hasattr(self, "_seed"):
            self._seed = None      # a seeded new layer starts its mask sequence afresh
        if hasattr(self, "_draws"):
            self._draws = 0
        try:
            outcome = self._run(case, start)
            if outcome.status == OK and case.followups:
                try:
                    outcome.followup_outputs = self._followups(case)
                except ValueError as exc:   # a later call the layer must refuse
                    return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CALL),
                                   duration_s=time.perf_counter() - start)
            return outcome
        except Refused as exc:
            return Outcome(status=REFUSED, detail=str(exc),
                           duration_s=time.perf_counter() - start)
        except Exception:
            return Outcome(status=ADAPTER_ERROR, detail=traceback.format_exc()[-4000:],
                           duration_s=time.perf_counter() - start)

    def _run(self, case: Case, start: float) -> Outcome:
        def raised(exc: Exception, phase: str) -> Outcome:
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, phase),
                           duration_s=time.perf_counter() - start)

        try:
            spec = parse_config(case.config)
        except ValueError as exc:
            return raised(exc, CONSTRUCT)
        device = case.config.get("device", "cpu")
        if device != self.device:
            raise Refused(f"{self.name} runs on {self.device}, the case asks for {device!r}")
        if case.dtype not in dtypes():
            raise Refused(f"dtype {case.dtype!r} is not supported")
        if case.kernel is None or case.recurrent_kernel is None or (
                spec.use_bias and case.bias is None):
            try:   # what is wrong with the call is said before what is missing
                geometry(spec, np.shape(case.inputs))
            except ValueError as exc:
                return raised(exc, CALL)
            raise Refused("the reference has no initializers: the case must carry weights")
        try:
            geo = geometry(spec, np.shape(case.inputs))
            check_case(spec, geo, case)
        except ValueError as exc:
            return raised(exc, CALL)
        outputs, grads, returned = self._compute(spec, geo, case)
        names = ["output", "h", "c"] if spec.return_state else ["output"]
        return Outcome(status=OK, outputs=outputs[:len(names)],
                       structure="list" if spec.return_state else "tensor",
                       dtypes=returned[:len(names)], grads=grads,
                       duration_s=time.perf_counter() - start)

    def _followups(self, case: Case) -> list[list[np.ndarray]]:
        """Later calls on the same layer: carried state, reset or explicit state."""
        import dataclasses
        spec = parse_config(case.config)
        results = []
        for call in case.followups:
            if call.reset:
                self.reset_states()
            sub = dataclasses.replace(case, inputs=call.inputs, initial_state=call.initial_state,
                                      followups=[], mask=None, cotangent=None)
            geo = geometry(spec, np.shape(sub.inputs))
            if spec.stateful and geo.B != np.shape(case.inputs)[0] and call.initial_state is None:
                raise ValueError(f"a stateful layer was called with batch size {geo.B} after "
                                 f"{np.shape(case.inputs)[0]}: the batch size must stay the same")
            check_case(spec, geo, sub)
            outputs, _, _ = self._compute(spec, geo, sub)
            results.append(outputs[:3 if spec.return_state else 1])
        return results

    def _state_key(self, spec: LayerSpec, geo: Geometry, dtype: str) -> Any:
        # A stateful layer's state is reused only by a call of the same layer
        # (same config and state shape); any other call starts from zeros.
        return (spec, geo.B, geo.Ho, geo.Wo, geo.C, dtype)

    def _compute(self, spec: LayerSpec, geo: Geometry, case: Case):
        raise NotImplementedError
