"""Bugs planted in the suite or its judge, as a pytest plugin, for meta-tests.

``pytest conformance/ -p tests.plants`` with ``CONVLSTM_PLANT`` naming one of
:data:`PLANTS` applies that bug, as an edit of the source would, in every
pytest process of the run (xdist workers load ``-p`` plugins too).  Each
meta-test runs the suite with one plant and checks that it goes red on the
clause the plant breaks; ``plant()`` applies one in-process.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from convlstm_conformance import oracle, tolerance


def _wrap_oracle(mutate):
    """Replace oracle.forward, which the oracle adapter and the judge share."""
    real = oracle.forward
    oracle.forward = lambda case: real(mutate(case))


def forget_gate():
    """The oracle's forget gate: ract(z_f + 0.5)."""
    def mutate(case):
        F = int(case.config["filters"])
        bias = np.zeros(4 * F) if case.bias is None else np.array(case.bias, np.float64)
        bias[F:2 * F] += 0.5
        return dataclasses.replace(case, bias=bias, config=dict(case.config, use_bias=True))
    _wrap_oracle(mutate)


def masking_inverted():
    """The oracle's Masking layer: ``x != mask_value`` turned into ``==``."""
    def mutate(case):
        if case.masking_value is None:
            return case
        x = np.asarray(case.inputs)
        mask = (x == case.masking_value).reshape(x.shape[0], x.shape[1], -1).any(axis=-1)
        return dataclasses.replace(case, masking_value=None, mask=mask)
    _wrap_oracle(mutate)


def nothing_judgeable():
    """The tolerance model's domain check rejects every case."""
    tolerance.unjudgeable = lambda case, result, bounds: "planted: nothing is judgeable"


def stale_wildcard():
    """A known divergence of the oracle on every clause in float64, which
    does not exist: an expectation that matches passes only."""
    from convlstm_conformance import expectations
    from convlstm_conformance.expr import parse
    real = expectations.for_adapter
    extra = expectations.Expectation("oracle", "*", "planted: a divergence that is not there",
                                     when=parse("dtype == 'float64'"), line=1,
                                     path="planted.yaml")
    expectations.for_adapter = lambda spec, adapter: real(spec, adapter) + (
        [extra] if adapter == "oracle" else [])


def half_in_float32():
    """The torch reference computes float16 and bfloat16 in float32, and
    reports the dtype it was asked for (an echo, not a reading)."""
    from convlstm_conformance.reference import torch_ref
    real = torch_ref.TorchReference._compute

    def compute(self, spec, geo, case):
        wide = dataclasses.replace(case, dtype="float32") if case.dtype in (
            "float16", "bfloat16") else case
        outputs, grads, _ = real(self, spec, geo, wide)
        return outputs, grads, [case.dtype] * 3
    torch_ref.TorchReference._compute = compute


PLANTS = {"forget_gate": forget_gate, "masking_inverted": masking_inverted,
          "nothing_judgeable": nothing_judgeable, "stale_wildcard": stale_wildcard,
          "half_in_float32": half_in_float32}


def plant(name: str) -> None:
    PLANTS[name]()


if os.environ.get("CONVLSTM_PLANT"):
    plant(os.environ["CONVLSTM_PLANT"])
