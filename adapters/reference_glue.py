"""What both fast references claim (``reference/``), for their two adapters."""
from __future__ import annotations

from convlstm_conformance.features import Capabilities, activations, formats


def reference_capabilities(device: str) -> Capabilities:
    """Everything in the spec but serialization, Masking layers, mixed
    policies, symbolic shapes and initializers: on one device."""
    names = activations() | {None}
    return Capabilities(
        activation=names, recurrent_activation=names, dtype=frozenset(formats()),
        device=frozenset({device}), mask=True, stateful=True, initial_state=True,
        return_state=True, return_sequences=True, go_backwards=True, dropout=True,
        dropout_injection=True, gradients=True, argument_validation=True)
