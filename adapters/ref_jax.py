"""The fast reference on JAX (``reference/jax_ref.py``), CPU and CUDA.

Its layouts are the canonical ones, so there is nothing to map: the adapter
is the reference's run protocol plus the capability declaration.
"""
from __future__ import annotations

from convlstm_conformance.adapters.reference_glue import reference_capabilities
from convlstm_conformance.features import Capabilities
from convlstm_conformance.reference.jax_ref import JaxReference
from convlstm_conformance.registry import COMPILED_DATA, AdapterEntry


class JaxReferenceAdapter(JaxReference):
    """``ref-jax-cpu`` / ``ref-jax-cuda``."""

    def capabilities(self) -> Capabilities:
        return reference_capabilities(self.device)


# XLA compiles each configuration (~0.3 s): several cases per example.
CPU = AdapterEntry("ref-jax-cpu", f"{__name__}:JaxReferenceAdapter", {"device": "cpu"},
                   ("jax",), isolate=True, data_per_example=COMPILED_DATA)
CUDA = AdapterEntry("ref-jax-cuda", f"{__name__}:JaxReferenceAdapter", {"device": "cuda"},
                    ("jax",), isolate=True, needs_gpu=True, data_per_example=COMPILED_DATA)
