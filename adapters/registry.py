"""Which implementations exist, whether they are installed, and how to start them.

Availability is decided without importing any framework (``find_spec`` only),
so listing adapters costs milliseconds.  Third-party implementations join in
two ways:

* in-process: ``--adapter-object package.module:factory`` on the pytest command
  line, or an entry point in the group ``convlstm_conformance.adapters``;
* out-of-process: ``--adapter-command "name=CMD ..."``: a program speaking the
  worker protocol of ``adapters/worker.py`` (documented in docs/worker-protocol.md).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from adapters.base import Adapter


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    target: str                      # "module:Class"
    kwargs: dict[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()   # modules that must be importable
    isolate: bool = True             # run in a worker process
    env: dict[str, str] = field(default_factory=dict)
    needs_gpu: bool = False
    # Share of each test's examples this adapter gets: implementations that
    # compile every new configuration (XLA) cost seconds per case.
    example_share: float = 1.0
    # Cases (fresh weights and inputs) each numerics and gradients example
    # runs on its configuration.  For the compiling adapters a configuration
    # costs ~0.3 s and each further case a few milliseconds, so every
    # compilation buys several data draws (benchmarks/README.md, throughput).
    data_per_example: int = 1

    def available(self) -> tuple[bool, str]:
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"not installed: {', '.join(missing)}"
        if self.needs_gpu and not gpu_present():
            return False, "no NVIDIA GPU on this machine"
        return True, ""


def gpu_present() -> bool:
    """An NVIDIA GPU is visible (cheap check: no framework import)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def _keras3(backend: str, lib: str, share: float = 1.0, data: int = 1) -> AdapterSpec:
    return AdapterSpec(f"keras3-{backend}", "adapters.keras_layer:KerasConvLSTM",
                       {"flavor": "keras3", "backend": backend}, ("keras", lib),
                       env={"KERAS_BACKEND": backend}, example_share=share,
                       data_per_example=data)


COMPILED_DATA = 3   # data_per_example of the adapters that compile each configuration


KNOWN: tuple[AdapterSpec, ...] = (
    AdapterSpec("oracle", "adapters.numpy_oracle:NumpyOracle", requires=("numpy", "scipy"),
                isolate=False),
    _keras3("tensorflow", "tensorflow"),
    _keras3("jax", "jax", share=0.75, data=COMPILED_DATA),   # ~0.3 s per new configuration (jit)
    _keras3("torch", "torch"),
    AdapterSpec("tf-keras", "adapters.keras_layer:KerasConvLSTM", {"flavor": "tf_keras"},
                ("tf_keras", "tensorflow")),
    AdapterSpec("ref-torch-cpu", "adapters.reference_torch:TorchReference", {"device": "cpu"},
                ("torch",), isolate=False),
    AdapterSpec("ref-torch-cuda", "adapters.reference_torch:TorchReference", {"device": "cuda"},
                ("torch",), needs_gpu=True),
    AdapterSpec("ref-jax-cpu", "adapters.reference_jax:JaxReference", {"device": "cpu"},
                ("jax",), data_per_example=COMPILED_DATA),
    AdapterSpec("ref-jax-cuda", "adapters.reference_jax:JaxReference", {"device": "cuda"},
                ("jax",), needs_gpu=True, data_per_example=COMPILED_DATA),
    AdapterSpec("flax", "adapters.flax_linen:FlaxConvLSTM", requires=("flax", "jax"),
                example_share=0.5, data_per_example=COMPILED_DATA),
    AdapterSpec("haiku", "adapters.haiku_conv2dlstm:HaikuConv2DLSTM", requires=("haiku", "jax"),
                example_share=0.5, data_per_example=COMPILED_DATA),
    AdapterSpec("conv-lstm", "adapters.conv_lstm_pypi:ConvLstmPyPI", requires=("conv_lstm", "torch")),
)


def known(name: str) -> AdapterSpec:
    for spec in KNOWN:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown adapter {name!r}; known: {', '.join(s.name for s in KNOWN)}")


def module_present(target: str) -> bool:
    module = target.partition(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def installed() -> list[str]:
    """Known adapters runnable here: their frameworks and their module import."""
    return [s.name for s in KNOWN if s.available()[0] and module_present(s.target)]


def create(spec: AdapterSpec) -> Adapter:
    """Instantiate an adapter: in a worker process when ``spec.isolate``."""
    if spec.isolate:
        from adapters.worker import WorkerAdapter
        return WorkerAdapter(spec.name, spec.target, spec.kwargs, env=spec.env)
    from adapters.worker import _instantiate
    return Guarded(_instantiate(spec.target, spec.kwargs))


def from_object(path: str) -> Adapter:
    """An in-process third-party adapter named ``module:attr`` (class or factory)."""
    from adapters.worker import _instantiate
    return Guarded(_instantiate(path, {}))


def from_command(spec: str) -> Adapter:
    """An out-of-process implementation: ``NAME=COMMAND ARGS...`` speaking the
    worker protocol (docs/worker-protocol.md)."""
    import shlex
    from adapters.worker import WorkerAdapter
    name, sep, command = spec.partition("=")
    argv = shlex.split(command)
    if not sep or not name.strip() or not argv:
        raise ValueError(f"--adapter-command wants NAME=COMMAND, got {spec!r}")
    return WorkerAdapter(name.strip(), argv=argv)


class Guarded(Adapter):
    """An in-process adapter whose exceptions become outcomes.

    The interface says ``run`` never raises; a third-party adapter that does
    anyway is recorded as an adapter error for that case, with its traceback,
    and the run goes on.
    """

    def __init__(self, inner: Adapter):
        self.inner = inner
        self.name = inner.name

    def capabilities(self):
        return self.inner.capabilities()

    def versions(self):
        return self.inner.versions()

    def run(self, case):
        import time
        import traceback
        from adapters.base import ADAPTER_ERROR, Outcome
        start = time.perf_counter()
        try:
            return self.inner.run(case)
        except Exception:
            return Outcome(status=ADAPTER_ERROR, duration_s=time.perf_counter() - start,
                           detail=f"{self.name}.run raised instead of returning an outcome:\n"
                                  + traceback.format_exc()[-3000:])

    def reset(self):
        getattr(self.inner, "reset", lambda: None)()

    def close(self):
        self.inner.close()


def entry_point_adapters() -> dict[str, str]:
    """name -> 'module:attr' for adapters published under our entry-point group."""
    from importlib.metadata import entry_points
    return {ep.name: ep.value for ep in entry_points(group="convlstm_conformance.adapters")}
