"""Build one environment per point of the release matrix, run the suite in each.

    python scripts/release_matrix.py                      # every point of release_matrix.toml
    python scripts/release_matrix.py --points 2024-07,2026-11
    python scripts/release_matrix.py --history reports/releases.sqlite   # also store each run

Each point of ``scripts/release_matrix.toml`` pins the framework releases of one
moment; the environment gets them, torch 2.13.0 (the CPU wheel where
``PIP_FIND_LINKS`` offers one) and the suite, built once as a wheel from the
committed HEAD, so every point runs the same suite on the same ci cases.
Environments are made by uv from ONE cache with hard links, so a second
environment costs seconds and almost no disk: the script measures each
environment cold (its wheels first fetched) and warm (rebuilt from the cache),
its time and the disk it adds (``du`` counting hard links once).

Output, under ``--out`` (default ``~/.cache/convlstm-conformance/matrix/runs``):
one results directory per point and ``matrix.json``: for each point whether it
installed and ran, why not, the installed versions, the timings and the disk.
Environments are deleted after their run (the uv cache is kept).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX = Path(__file__).with_suffix(".toml")
HOME = Path.home() / ".cache" / "convlstm-conformance" / "matrix"
TORCH = "torch==2.13.0"
# Below this much free disk no new environment is built (a point's wheels
# unpack to a few GiB in the cache).
MIN_FREE_GB = 27
RUN_TIMEOUT_S = 40 * 60
TAIL = 1500  # characters of a failing command's output kept as its reason


def load_points(path: Path = MATRIX) -> tuple[list[str], list[dict]]:
    """The adapters and the points of the matrix file, checked."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    adapters, points = data.get("adapters"), data.get("point")
    if not (isinstance(adapters, list) and adapters and isinstance(points, list) and points):
        raise SystemExit(f"{path}: needs 'adapters' and at least one [[point]]")
    for point in points:
        point.setdefault("adapters", adapters)
    labels = [p.get("label") for p in points]
    if len(set(labels)) != len(labels) or not all(isinstance(x, str) and x for x in labels):
        raise SystemExit(f"{path}: every point needs a distinct label")
    return adapters, points


def torch_requirement() -> str:
    """torch 2.13.0, the CPU build where a local wheel directory has one: on
    the registry the same version is the multi-GB CUDA build."""
    for folder in os.environ.get("PIP_FIND_LINKS", "").split():
        if any(Path(folder).glob("torch-2.13.0+cpu-*.whl")):
            return "torch==2.13.0+cpu"
    return TORCH


def _uv(home: Path) -> list[str]:
    uv = shutil.which("uv") or str(home / "tools" / "bin" / "uv")
    if not Path(uv).exists():
        raise SystemExit(f"uv not found: pip install uv, or put it at {uv}")
    return [uv]


def _env(home: Path) -> dict:
    env = dict(os.environ, UV_CACHE_DIR=str(home / "uv-cache"), UV_LINK_MODE="hardlink")
    if os.environ.get("PIP_FIND_LINKS"):
        env["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"].replace(" ", ",")
    return env


def _run(cmd: list[str], env: dict, timeout: float | None = None, cwd=None) -> tuple[int, str, float]:
    start = time.monotonic()
    try:
        p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        code, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as exc:
        code, out = 124, f"timed out after {timeout:g} s\n{exc.stdout or ''}{exc.stderr or ''}"
    return code, out, time.monotonic() - start


def _du_kib(*paths: Path) -> int:
    """Disk used by ``paths`` together, each hard-linked file counted once."""
    out = subprocess.run(["du", "-sk", "-c", *map(str, paths)], capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1].split()[0])


def _free_gb(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1e9


def build_wheel(home: Path, env: dict) -> tuple[Path, str]:
    """The suite as a wheel built from the committed HEAD (not the work tree)."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    src = home / "src" / commit[:12]
    wheels = home / "wheels" / commit[:12]
    found = sorted(wheels.glob("convlstm_conformance-*.whl"))
    if found:
        return found[0], commit
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    code, out, _ = _run(_uv(home) + ["build", "--wheel", "-q", "-o", str(wheels), str(src)], env)
    shutil.rmtree(src, ignore_errors=True)
    if code:
        raise SystemExit(f"building the suite's wheel failed:\n{out[-TAIL:]}")
    return sorted(wheels.glob("convlstm_conformance-*.whl"))[0], commit


def make_env(home: Path, env: dict, where: Path, requirements: list[str]) -> tuple[int, str, float]:
    shutil.rmtree(where, ignore_errors=True)
    start = time.monotonic()
    code, out, _ = _run(_uv(home) + ["venv", "-q", "--python", f"{sys.version_info[0]}.{sys.version_info[1]}", str(where)], env)
    if code == 0:
        code, out, _ = _run(_uv(home) + ["pip", "install", "-q", "--python",
                                         str(where / "bin" / "python"), *requirements], env)
    return code, out, time.monotonic() - start


def installed(where: Path, env: dict, home: Path) -> dict[str, str]:
    p = subprocess.run(_uv(home) + ["pip", "list", "--format", "json", "--python",
                                    str(where / "bin" / "python")],
                       env=env, capture_output=True, text=True)
    if p.returncode:
        return {}
    out = p.stdout
    wanted = {"keras", "tensorflow", "tf-keras", "jax", "jaxlib", "flax", "dm-haiku", "torch",
              "numpy", "ml-dtypes", "hypothesis", "convlstm-conformance"}
    return {p["name"]: p["version"] for p in json.loads(out) if p["name"] in wanted}


def run_point(point: dict, wheel: Path, home: Path, out: Path, env: dict, workers: int,
              examples: int | None) -> dict:
    label, adapters = point["label"], point["adapters"]
    where = home / "envs" / label
    result: dict = {"label": label, "pins": point["pins"], "adapters": adapters}
    if _free_gb(home) < MIN_FREE_GB:
        result.update(installs=False, reason=f"not built: under {MIN_FREE_GB} GB of free disk")
        return result
    requirements = [str(wheel), torch_requirement(), *point["pins"]]
    cache_before = _du_kib(home / "uv-cache")
    code, text, cold_s = make_env(home, env, where, requirements)
    result["cold_s"] = round(cold_s, 1)
    if code:
        result.update(installs=False, reason=text.strip()[-TAIL:])
        shutil.rmtree(where, ignore_errors=True)
        return result
    cache_after = _du_kib(home / "uv-cache")
    result.update(
        installs=True, versions=installed(where, env, home),
        cache_growth_mib=round((cache_after - cache_before) / 1024),
        env_apparent_mib=round(_du_kib(where) / 1024),
        env_own_mib=round((_du_kib(home / "uv-cache", where) - cache_after) / 1024))
    results = out / label
    shutil.rmtree(results, ignore_errors=True)
    cmd = [str(where / "bin" / "convlstm-conformance"), "run", "--profile", "ci",
           "--adapters", ",".join(adapters), "--results-dir", str(results), "-n", str(workers)]
    # Outside the checkout, so the installed suite (not the work tree) runs.
    run_env = dict(env, CONVLSTM_PROFILE="ci")
    if examples:
        run_env["CONVLSTM_EXAMPLES"] = str(examples)
    code, text, run_s = _run(cmd, run_env, RUN_TIMEOUT_S, cwd=home)
    result.update(run_rc=code, run_s=round(run_s, 1), examples=examples, results=str(results),
                  runs=(results / "run.json").exists())
    (out / f"{label}.log").write_text(text, encoding="utf-8")
    if not result["runs"]:
        result["reason"] = text.strip()[-TAIL:]
    # Warm: the same environment again from the cache alone.
    code, _, warm_s = make_env(home, env, where, requirements)
    result["warm_s"] = round(warm_s, 1) if code == 0 else None
    shutil.rmtree(where, ignore_errors=True)
    return result


def summary_table(summary: dict) -> str:
    """matrix.json as a Markdown table: per point, what installed and ran."""
    rows = ["| point | releases | installs | cold s | warm s | cache +MiB | env own MiB "
            "| env apparent MiB | suite s | adapters (status) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label in sorted(summary.get("points", {})):
        r = summary["points"][label]
        versions = r.get("versions") or {}
        releases = ", ".join(f"{k} {versions.get(k, v)}" for k, v in
                             (pin.split("==") for pin in r["pins"]) if k != "jaxlib")
        status = (_adapter_status(Path(r["results"]), r.get("adapters"))
                  if r.get("runs") else r.get("reason", ""))
        rows.append("| " + " | ".join(str(x) for x in (
            label, releases, "yes" if r.get("installs") else "no: " + r.get("reason", "")[-200:],
            r.get("cold_s", "-"), r.get("warm_s", "-"), r.get("cache_growth_mib", "-"),
            r.get("env_own_mib", "-"), r.get("env_apparent_mib", "-"), r.get("run_s", "-"),
            status)).replace("\n", " ") + " |")
    return "\n".join(rows) + "\n"


def _adapter_status(results: Path, selected: list[str] | None) -> str:
    try:
        adapters = json.loads((results / "run.json").read_text())["adapters"]
    except (OSError, ValueError, KeyError):
        return "no run.json"
    return "; ".join(f"{name} {a.get('status')}" + (f" ({a.get('detail')[:120]})"
                                                    if a.get("status") != "available" else "")
                     for name, a in adapters.items() if selected is None or name in selected)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", help="comma-separated labels (default: every point)")
    p.add_argument("--home", type=Path, default=HOME, help="uv cache, environments, wheels")
    p.add_argument("--out", type=Path, help="results root (default: HOME/runs)")
    p.add_argument("--history", type=Path, help="add each run to this history database")
    p.add_argument("-n", "--workers", type=int, default=1)
    p.add_argument("--examples", type=int,
                   help="examples per test (CONVLSTM_EXAMPLES; default: the ci profile's)")
    p.add_argument("--summary", action="store_true",
                   help="print OUT/matrix.json as a Markdown table and stop")
    args = p.parse_args(argv)
    if args.summary:
        out = args.out or args.home / "runs"
        print(summary_table(json.loads((out / "matrix.json").read_text())), end="")
        return 0
    _, points = load_points()
    if args.points:
        wanted = args.points.split(",")
        by_label = {pt["label"]: pt for pt in points}
        unknown = set(wanted) - set(by_label)
        if unknown:
            raise SystemExit(f"unknown points: {', '.join(sorted(unknown))}")
        points = [by_label[w] for w in wanted]   # in the order given
    home, out = args.home, args.out or args.home / "runs"
    out.mkdir(parents=True, exist_ok=True)
    (home / "uv-cache").mkdir(parents=True, exist_ok=True)
    env = _env(home)
    wheel, commit = build_wheel(home, env)
    summary_file = out / "matrix.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    summary.setdefault("points", {})
    summary.update(suite_commit=commit, python=sys.version.split()[0])
    for point in points:
        print(f"[{time.strftime('%H:%M:%S')}] {point['label']}: building", flush=True)
        result = run_point(point, wheel, home, out, env, args.workers, args.examples)
        result["suite_commit"] = commit
        summary["points"][point["label"]] = result
        summary_file.write_text(json.dumps(summary, indent=2, sort_keys=True))
        print(f"[{time.strftime('%H:%M:%S')}] {point['label']}: "
              + ", ".join(f"{k}={result.get(k)}" for k in
                          ("installs", "cold_s", "warm_s", "env_own_mib", "run_rc", "run_s")),
              flush=True)
        if args.history and result.get("runs"):
            subprocess.run([sys.executable, "-m", "convlstm_conformance.reports", "history", "add",
                            result["results"], "--db", str(args.history),
                            "--label", point["label"]], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
