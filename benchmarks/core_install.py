#!/usr/bin/env python
"""The core alone: build the wheel, install it where no framework is, measure.

    .venv/bin/python benchmarks/core_install.py [--keep DIR]

What an adapter author gets from ``pip install convlstm-conformance``: the
wheel is built from the checkout, a fresh virtual environment gets the core's
dependencies (read from pyproject.toml, pinned by constraints.txt) and then
the wheel with ``--no-deps``.  Printed: the time of each step, the size of
the environment and of the package, and the time to import the core and list
the implementations (median of several fresh interpreters), with the check
that no framework is importable there at all.

``tests/test_packaging.py`` drives the same functions to prove the installed
core certifies an adapter from a directory of its own.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Modules of the frameworks and ports: none may be importable in the core's
#: environment, and none may be imported by the core in any environment.
FRAMEWORKS = ("torch", "tensorflow", "jax", "jaxlib", "keras", "tf_keras", "flax", "haiku",
              "conv_lstm")
#: What "importing the core" means: the package, the plugin, the registry
#: listing every implementation (which imports every adapter module).
IMPORT_CORE = ("import convlstm_conformance, convlstm_conformance.plugin, "
               "convlstm_conformance.cli; from convlstm_conformance import registry; "
               "registry.installed()")


def core_dependencies() -> list[str]:
    """The core's requirements, as pyproject.toml declares them."""
    with open(REPO / "pyproject.toml", "rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def build_wheel(out_dir: Path) -> Path:
    """The wheel of the checkout, built in isolation as pip builds it."""
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir), str(REPO)])
    [wheel] = out_dir.glob("convlstm_conformance-*.whl")
    return wheel


def clean_env() -> dict[str, str]:
    """The environment of a user's shell: no checkout on the path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def make_env(root: Path, wheel: Path) -> tuple[Path, dict[str, float]]:
    """A fresh virtual environment with the core installed; (its python, timings)."""
    times: dict[str, float] = {}
    base = getattr(sys, "_base_executable", sys.executable)
    t = time.perf_counter()
    run([base, "-m", "venv", str(root)])
    times["venv"] = time.perf_counter() - t
    python = root / "bin" / "python"
    t = time.perf_counter()
    run([str(python), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"),
         *core_dependencies()], env=clean_env())
    times["dependencies"] = time.perf_counter() - t
    t = time.perf_counter()
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], env=clean_env())
    times["wheel"] = time.perf_counter() - t
    return python, times


def import_seconds(python: Path, cwd: Path, repeats: int = 5) -> list[float]:
    """Wall time of importing the core and listing implementations, per fresh interpreter."""
    code = ("import time; t = time.perf_counter(); " + IMPORT_CORE
            + "; print(time.perf_counter() - t)")
    return [float(run([str(python), "-c", code], cwd=cwd, env=clean_env()).stdout)
            for _ in range(repeats)]


def frameworks_seen(python: Path, cwd: Path) -> dict[str, list[str]]:
    """Which framework modules are importable there, and which the core imported."""
    code = (IMPORT_CORE + "; import sys, importlib.util as u; "
            f"F = {FRAMEWORKS!r}; "
            "print([m for m in F if u.find_spec(m)]); print([m for m in F if m in sys.modules])")
    out = run([str(python), "-c", code], cwd=cwd, env=clean_env()).stdout.splitlines()
    return {"importable": eval_list(out[-2]), "imported": eval_list(out[-1])}


def eval_list(text: str) -> list[str]:
    import ast
    return list(ast.literal_eval(text))


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2 ** 20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="build here and keep it (default: a temporary directory)")
    args = ap.parse_args(argv)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="convlstm-core-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        wheel = build_wheel(root / "dist")
        build_s = time.perf_counter() - t
        python, times = make_env(root / "env", wheel)
        site = next((root / "env" / "lib").glob("python*/site-packages"))
        seen = frameworks_seen(python, root)
        imports = import_seconds(python, root)
        print(f"wheel {wheel.name}: {wheel.stat().st_size / 1024:.0f} KiB, built in {build_s:.1f} s")
        print(f"fresh environment: venv {times['venv']:.1f} s, core dependencies "
              f"{times['dependencies']:.1f} s (pip cache as found), wheel {times['wheel']:.1f} s")
        print(f"size: environment {size_mb(root / 'env'):.0f} MB, of which site-packages "
              f"{size_mb(site):.0f} MB and convlstm_conformance "
              f"{size_mb(site / 'convlstm_conformance'):.1f} MB")
        print(f"import core + list implementations: median {statistics.median(imports):.3f} s "
              f"(min {min(imports):.3f}, max {max(imports):.3f}, n={len(imports)})")
        print(f"frameworks importable there: {seen['importable'] or 'none'}; "
              f"imported by the core: {seen['imported'] or 'none'}")
        return 0 if not seen["importable"] and not seen["imported"] else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
