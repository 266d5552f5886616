"""Keras 3 on JAX: the compiled path and its per-configuration cache.

adapters/keras_layer.py runs one inference call with given weights through
``jax.jit(layer.stateless_call)`` and keeps the compiled function per
configuration.  A cache keyed too loosely would hand a case another case's
weights, shapes or call arguments; these tests run configurations again with
new weights, masks, initial states and cotangents, and require each result to
match the oracle.  The adapter runs in its worker process, as in the suite.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from convlstm_conformance.model import CALL, OK, RAISED
from reference.tests.test_reference import assert_conforms, make_case

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None or importlib.util.find_spec("keras") is None,
    reason="Keras 3 on JAX is not installed")

CONFIG = dict(filters=3, kernel_size=3, padding="same", return_sequences=True,
              return_state=True)


@pytest.fixture(scope="module")
def keras_jax():
    from convlstm_conformance import registry
    adapter = registry.create("keras3-jax")
    yield adapter
    adapter.close()


def test_same_configuration_new_weights(keras_jax):
    """The second case of a configuration reuses the compiled call, not its weights."""
    first = make_case(CONFIG, seed=1)
    second = make_case(CONFIG, seed=2)
    a = keras_jax.run(first)
    b = keras_jax.run(second)
    assert_conforms(first, a, "keras3-jax, first case of a configuration")
    assert_conforms(second, b, "keras3-jax, same configuration, new weights and inputs")
    assert not np.allclose(a.outputs[0], b.outputs[0]), (
        "two cases with different weights gave the same output: stale weights in the cache")


def test_call_arguments_are_part_of_the_key(keras_jax):
    """Initial state and cotangent change the compiled function.

    (A mask would too, but Keras 3 on JAX cannot apply one to ConvLSTM2D: see
    conformance/expectations/keras3-jax.yaml.)
    """
    plain = make_case(CONFIG, seed=3)
    with_state = make_case(CONFIG, seed=3, initial_state=True)
    with_grads = make_case(CONFIG, seed=3)
    with_grads.cotangent = np.random.default_rng(4).standard_normal((2, 3, 7, 6, 3))
    for case, what in ((plain, "plain"), (with_state, "initial_state"),
                       (with_grads, "cotangent"), (plain, "plain again")):
        assert_conforms(case, keras_jax.run(case), f"keras3-jax, {what}")
    grads = keras_jax.run(with_grads).grads
    assert set(grads) >= {"inputs", "kernel", "recurrent_kernel", "bias"}, (
        f"keras3-jax returned gradients for {sorted(grads)} only")


def test_wrong_weight_shape_raises_on_a_cached_configuration(keras_jax):
    """set_weights still checks the shapes when the configuration is cached."""
    good = make_case(CONFIG, seed=5)
    assert keras_jax.run(good).status == OK
    bad = make_case(CONFIG, seed=6)
    bad.kernel = bad.kernel[:, :, :, :-1]
    out = keras_jax.run(bad)
    assert out.status == RAISED and out.error.phase == CALL, (
        f"a kernel of shape {bad.kernel.shape} for 4*filters=12 columns must raise at call, "
        f"got {out.summary()}")
