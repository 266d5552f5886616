"""convlstm-conformance: a conformance suite and differential fuzzer for ConvLSTM2D.

The framework-free core.  What an adapter author needs is importable from
here; everything else lives in modules named for what they do:

* ``model``: Case, Outcome, Adapter (the interface) and the ``.npz`` case files;
* ``features``: the table of capabilities an implementation may claim;
* ``spec``, ``expr``: the contract (``specs/convlstm2d.yaml``) and its expressions;
* ``oracle``, ``tolerance``: the float64 judge and its error budgets;
* ``strategies``, ``harness``, ``expectations``, ``profiles``: drawing and judging;
* ``records``, ``recorder``: the result records and their schema;
* ``registry``, ``worker``: finding implementations and running them out of process;
* ``plugin``, ``cli``: the pytest plugin and the ``convlstm-conformance`` command.

Subpackages: ``suite`` (the pytest modules), ``adapters`` (one module per
implementation), ``reference`` (the fast reference ConvLSTM2D), ``reports``.
The core imports none of them except ``suite``: adapters and the report
renderer are found through entry points, as a third party's are.
"""
from convlstm_conformance.features import Capabilities, refuse_unless_mappable, required_features
from convlstm_conformance.model import (ADAPTER_ERROR, CALL, CONSTRUCT, CRASHED, OK, RAISED,
                                        REFUSED, TIMEOUT, Adapter, Call, Case, CaseFileError,
                                        ErrorInfo, Outcome, Refused)
from convlstm_conformance.registry import AdapterEntry

__version__ = "0.2.0"

__all__ = ["Adapter", "AdapterEntry", "Call", "Capabilities", "Case", "CaseFileError",
           "ErrorInfo", "Outcome", "Refused", "refuse_unless_mappable", "required_features",
           "OK", "RAISED", "REFUSED", "CRASHED", "TIMEOUT", "ADAPTER_ERROR", "CONSTRUCT", "CALL",
           "__version__"]
