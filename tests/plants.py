"""A pytest plugin that plants a bug in the oracle, for meta-tests.

``pytest conformance/ -p tests.planted_oracle`` with ``PLANTED_ORACLE`` set to
one of :data:`PLANTS` replaces ``oracle.forward`` (which the oracle adapter
and the judge both use) by a wrong one, as an edit of ``core/oracle.py``
would.  A suite that judged the oracle against itself stays green; the suite
must go red on the clause the plant breaks.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from convlstm_conformance import oracle


def forget_gate(case):
    """ract(z_f + 0.5): the forget gate's pre-activation off by 0.5."""
    F = int(case.config["filters"])
    bias = np.zeros(4 * F) if case.bias is None else np.array(case.bias, np.float64)
    bias[F:2 * F] += 0.5
    config = dict(case.config, use_bias=True)
    return dataclasses.replace(case, bias=bias, config=config)


def masking_inverted(case):
    """The Masking layer's test ``x != mask_value`` turned into ``==``."""
    if case.masking_value is None:
        return case
    x = np.asarray(case.inputs)
    mask = (x == case.masking_value).reshape(x.shape[0], x.shape[1], -1).any(axis=-1)
    return dataclasses.replace(case, masking_value=None, mask=mask)


PLANTS = {"forget_gate": forget_gate, "masking_inverted": masking_inverted}


def plant(name: str) -> None:
    real = oracle.forward
    mutate = PLANTS[name]

    def planted(case):
        result = real(mutate(case))
        return result
    oracle.forward = planted


if os.environ.get("PLANTED_ORACLE"):
    plant(os.environ["PLANTED_ORACLE"])
