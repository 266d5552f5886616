"""The fast reference on PyTorch (``reference/torch_ref.py``), CPU and CUDA.

Its layouts are the canonical ones, so there is nothing to map: the adapter
is the reference's run protocol plus the capability declaration.
"""
from __future__ import annotations

from convlstm_conformance.adapters.reference_glue import reference_capabilities
from convlstm_conformance.features import Capabilities
from convlstm_conformance.reference.torch_ref import TorchReference
from convlstm_conformance.registry import AdapterEntry


class TorchReferenceAdapter(TorchReference):
    """``ref-torch-cpu`` / ``ref-torch-cuda``."""

    def capabilities(self) -> Capabilities:
        return reference_capabilities(self.device)


# In-process on the CPU: it is the suite's own code and imports fast.
CPU = AdapterEntry("ref-torch-cpu", f"{__name__}:TorchReferenceAdapter", {"device": "cpu"},
                   ("torch",))
CUDA = AdapterEntry("ref-torch-cuda", f"{__name__}:TorchReferenceAdapter", {"device": "cuda"},
                    ("torch",), isolate=True, needs_gpu=True)
