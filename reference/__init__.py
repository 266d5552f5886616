"""The fast reference ConvLSTM2D: PyTorch and JAX, CPU and CUDA, with C kernels.

Installed as ``convlstm_conformance.reference``.  The same contract as the
float64 oracle (Keras 3 semantics, ``specs/convlstm2d.yaml``), written for
speed instead of clarity:

* :mod:`.config`: configuration and geometry, framework-free, shared by both
  backends; :mod:`.runner`: the run protocol both share (case in, outcome out);
* :mod:`.torch_ref` with :mod:`.torch_plan`, :mod:`.torch_infer`,
  :mod:`.torch_train` and the C kernels of :mod:`.native`: the PyTorch reference;
* :mod:`.jax_ref`: the JAX reference.

No backend module imports the other's, and importing any of them changes
nothing process-wide: frameworks load lazily, thread settings apply where the
reference runs and are restored.  Tests: ``reference/tests``; benchmarks:
``reference/benchmarks`` (and ``benchmarks/bench_speed.py`` against the
frameworks).  The suite reaches both through thin adapters
(``adapters/ref_torch.py``, ``adapters/ref_jax.py``).
"""
