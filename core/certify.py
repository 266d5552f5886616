"""``convlstm-conformance certify``: one implementation, judged clause by clause,
summed up as a certificate (JSON, and HTML through the ``certificate`` reporter).

The implementation is named once: a registered adapter (``--adapter NAME``),
an in-process one of yours (``--adapter-object MODULE:ATTR``) or a program
speaking the worker protocol (``--adapter-command "NAME=COMMAND"``,
docs/worker-protocol.md).  The suite runs in a pytest subprocess, as ``run``
does; its draws stay inside the capabilities the implementation declares, and
a clause that needs an undeclared feature is *not claimed*.

Profiles (derandomized: the same examples every run, so a certificate can be
reproduced; measured on a 2-core machine, see benchmarks/README.md):

* ``quick``: the ci profile, 8 examples per test (ref-torch-cpu 31 s, oracle 53 s);
* ``standard``: 40 examples per test (ref-torch-cpu 61 s, oracle 91 s);
* ``thorough``: 200 examples per test (ref-torch-cpu 341 s, oracle 204 s).

Verdicts per clause, from the test records of the run (records.py):

* met: every test of the clause that ran passed, and at least one ran;
* failed: a test failed, errored or crashed, or the clause shows a known
  divergence of the suite's expectations files;
* waived: it failed, and every failure matches one of the author's waivers;
  a waived clause is not met (its search stopped at the waived failure);
* not claimed: every test of it was skipped, because the implementation does
  not declare a feature it needs;
* not judged: no test of this run judged it (errata, or a run restricted with
  ``--level`` or pytest ``-k``).

A level (``levels:`` in the spec, levels.py) is met when the implementation
declares every feature the level lists, every clause of the level is met, and
CAPABILITY-CLAIMS (cases outside its declarations are refused) has not failed.

Waivers: a YAML file the author keeps::

    adapter: mylstm          # optional: the implementation it is for
    waivers:
      - clause: SEM-DATA-FORMAT
        when: "fmt == 'channels_first'"    # optional, the expectations' condition language
        match: "diverges"                   # optional regex on the failure message
        reason: why, in a sentence
        link: https://...                   # optional

checked by the expectation loader (expectations.py).  A waiver matching no
failure of the run is *stale*: reported, and the command exits 1.

Exit status: 0 certificate written and no clause failed; 1 a clause failed
(or a waiver is stale, or ``--require-level`` is not met); 2 bad input (the
spec, the waivers, the command line) or the suite could not run.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from convlstm_conformance import records, registry
from convlstm_conformance.expectations import Expectation, parse_entries
from convlstm_conformance.spec import Spec, SpecError, _load_yaml

CERTIFICATE_SCHEMA = 1
CAPABILITY_CLAUSE = "CAPABILITY-CLAIMS"
EXIT_FAILED, EXIT_USAGE = 1, 2


@dataclass(frozen=True)
class Profile:
    name: str
    examples: int | None       # CONVLSTM_EXAMPLES, None: the ci profile's own
    doc: str


PROFILES = {p.name: p for p in (
    Profile("quick", None, "the ci profile: 8 derandomized examples per test"),
    Profile("standard", 40, "40 derandomized examples per test"),
    Profile("thorough", 200, "200 derandomized examples per test"),
)}

#: Verdict -> what it means; the certificate carries this legend.
VERDICTS = {
    "met": "every test of the clause that ran passed, and at least one ran",
    "failed": "a test failed, errored or crashed, or a known divergence of the suite's "
              "expectations files showed",
    "waived": "failed, and every failure matches an author's waiver; not met: the clause's "
              "search stopped at the waived failure, so nothing past it was judged",
    "not claimed": "skipped: the implementation does not declare a feature the clause needs",
    "not judged": "no test of this run judged it (an erratum, or a restricted run)",
}
FAILING = ("failed", "error", "crashed")


# --------------------------------------------------------------------------
# Waivers


def load_waivers(path: str | Path, spec: Spec) -> tuple[str | None, list[Expectation]]:
    """(adapter named by the file or None, waivers); SpecError naming the line
    of any defect."""
    path = Path(path)
    doc = _load_yaml(path)
    if not isinstance(doc, dict) or "waivers" not in doc:
        raise SpecError(path, getattr(doc, "line", 1),
                        "a waiver file is a mapping with a 'waivers' list (and optionally "
                        "'adapter')")
    unknown = sorted(set(doc) - {"adapter", "waivers"})
    if unknown:
        raise SpecError(path, doc.key_lines[unknown[0]],
                        f"unknown key(s) {unknown}; allowed: adapter, waivers")
    adapter = doc.get("adapter")
    if adapter is not None and not isinstance(adapter, str):
        raise SpecError(path, doc.key_lines["adapter"], "'adapter' must be a name")
    return adapter, parse_entries(path, doc, "waivers", adapter or "*", spec)


def _env(spec: Spec, rec: Mapping[str, Any]) -> dict[str, Any]:
    """The expression names of a failure's minimal configuration ({} if none)."""
    if not isinstance(rec.get("config"), dict):
        return {}
    try:
        env = spec.environment(rec["config"], rec.get("dims") or {})
    except (ValueError, TypeError, KeyError):
        return {}
    env["dtype"] = rec.get("dtype")
    return env


def waiver_for(spec: Spec, waivers: list[Expectation], rec: Mapping[str, Any]):
    for w in waivers:
        if w.matches(rec["clause"], _env(spec, rec), rec.get("message") or ""):
            return w
    return None


# --------------------------------------------------------------------------
# Running the suite


def pytest_command(selection: list[str], profile: Profile, results_dir: Path, workers: int,
                   spec_path: str | None, only: list[str] | None, extra: list[str]) -> list[str]:
    from convlstm_conformance.plugin import SUITE_DIR
    cmd = [sys.executable, "-m", "pytest", str(SUITE_DIR), "--profile", "ci",
           "--results-dir", str(results_dir), "-p", "no:cacheprovider",
           "-p", "convlstm_conformance.progress", "--no-report", "-q", *selection]
    if spec_path:
        cmd += ["--spec", spec_path]
    if workers > 1:
        cmd += ["-n", str(workers)]
    if only:
        # Test ids end in the clause id ("[adapter-SEM-STEP]"); the capability
        # test carries none and always runs.
        cmd += ["-k", " or ".join(["test_capabilities", *only])]
    return cmd + extra


def run_suite(cmd: list[str], profile: Profile, results_dir: Path, every: float,
              log_path: Path) -> int:
    """Run pytest, its output to ``log_path``; a progress line to stderr every
    ``every`` seconds."""
    from convlstm_conformance.progress import Progress, clock
    env = dict(os.environ)
    env.pop("CONVLSTM_EXAMPLES", None)
    if profile.examples is not None:
        env["CONVLSTM_EXAMPLES"] = str(profile.examples)
    results_dir.mkdir(parents=True, exist_ok=True)
    progress = Progress(results_dir)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                try:
                    code = proc.wait(timeout=every)
                    break
                except subprocess.TimeoutExpired:
                    print(f"certify: {progress.line()}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
    print(f"certify: {progress.line()} (finished)", file=sys.stderr, flush=True)
    return code


# --------------------------------------------------------------------------
# The certificate


def read_records(results_dir: Path) -> list[dict]:
    """The run's test records that follow the schema (records.py)."""
    from convlstm_conformance import findings
    return [r for r in findings.read_records(results_dir) if not records.problems(r)]


def _claims(caps: Mapping[str, Any], name: str, wanted: Any) -> bool:
    have = caps.get(name)
    if wanted is True:
        return have is True
    return isinstance(have, list) and set(wanted) <= set(have)


def _failure(rec: dict, verdict: str, note: str = "") -> dict:
    return {"clause": rec["clause"], "test": rec.get("test", ""), "outcome": rec["outcome"],
            "verdict": verdict, "note": note, "message": (rec.get("message") or "")[-4000:],
            "config": rec.get("config"), "dims": rec.get("dims"), "dtype": rec.get("dtype"),
            "errors": rec.get("errors") or {}, "repro": rec.get("repro")}


def known_divergence(rec: Mapping[str, Any]) -> bool:
    """A failure the suite's own expectations files list (the test xfailed,
    or xpassed on one entry while another still failed)."""
    return rec["outcome"] == "xfailed" or (rec["outcome"] == "xpassed" and any(
        e.get("failed") for e in rec.get("expected") or ()))


def clause_verdict(recs: list[dict], waived: dict[int, Expectation]) -> tuple[str, str]:
    """(verdict, why) of one clause from its records; ``waived`` maps the id()
    of each failing record an author's waiver covers to that waiver."""
    failing = [r for r in recs if r["outcome"] in FAILING]
    known = [r for r in recs if known_divergence(r)]
    if failing and all(id(r) in waived for r in failing) and not known:
        return "waived", "; ".join(sorted({waived[id(r)].reason for r in failing}))
    if failing:
        first = (failing[0].get("message") or failing[0]["outcome"]).splitlines()
        return "failed", (first[0] if first else "")[:300]
    if known:
        return "failed", "known divergence: " + (known[0].get("reason") or "")[:300]
    ran = [r for r in recs if r["outcome"] in ("passed", "xpassed")]
    if ran:
        stale = [r for r in ran if r["outcome"] == "xpassed"]
        return "met", ("the suite's expectations list a divergence that no longer shows"
                       if stale else "")
    if recs:
        return "not claimed", (recs[0].get("reason") or "")[:300]
    return "not judged", ""


def build(results_dir: Path, spec: Spec, waivers: list[Expectation], profile: Profile,
          waiver_file: str | None = None) -> dict:
    """The certificate of the run in ``results_dir``, as a JSON-ready dict."""
    from convlstm_conformance import __version__
    try:
        run = json.loads((results_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{results_dir}: no readable run.json ({exc}); the suite did not "
                         f"start") from None
    recs = read_records(results_dir)
    # The adapter's own name once it started; else what its records say.
    name = next(iter(_selected_names(run)), recs[0]["adapter"] if recs else "?")
    info = (run.get("adapters") or {}).get(name, {})
    caps = info.get("capabilities") or {}

    by_clause: dict[str, list[dict]] = {}
    for r in recs:
        by_clause.setdefault(r["clause"], []).append(r)
    waived: dict[int, Expectation] = {}
    for r in recs:
        if r["outcome"] in FAILING:
            w = waiver_for(spec, waivers, r)
            if w is not None:
                waived[id(r)] = w

    titles = {CAPABILITY_CLAUSE: ("capabilities", "cases outside the declared capabilities "
                                                  "are refused")}
    titles.update({c.id: (c.kind, c.title) for c in spec.clauses.values()})
    order = [CAPABILITY_CLAUSE, *spec.clauses, *sorted(set(by_clause) - set(titles))]
    clauses, failures = [], []
    for cid in order:
        rs = by_clause.get(cid, [])
        verdict, why = clause_verdict(rs, waived)
        if cid == CAPABILITY_CLAUSE and verdict == "not claimed":
            verdict = "not judged"      # it claims every probed feature: nothing to refuse
        kind, title = titles.get(cid, ("?", "not a clause of this spec"))
        clauses.append({"id": cid, "kind": kind, "title": title, "verdict": verdict,
                        "why": why, "examples": sum(r.get("examples") or 0 for r in rs),
                        "tests": len(rs)})
        for r in rs:
            if r["outcome"] in FAILING:
                w = waived.get(id(r))
                failures.append(_failure(r, "waived" if w else "failed",
                                         f"waived: {w.reason} ({w.where})" if w else ""))
            elif known_divergence(r):
                failures.append(_failure(r, "failed", "known divergence: "
                                         + (r.get("reason") or "")))
    verdicts = {c["id"]: c["verdict"] for c in clauses}

    used = set(map(id, waived.values()))
    waiver_rows = [{"clause": w.clause, "when": w.when.source if w.when else None,
                    "match": w.match.pattern if w.match else None, "reason": w.reason,
                    "link": w.link, "where": w.where,
                    "failures": sum(1 for v in waived.values() if v is w),
                    "stale": id(w) not in used} for w in waivers]

    levels = []
    for level in spec.levels.values():
        missing = sorted(n for n, want in level.features.items() if not _claims(caps, n, want))
        unmet = [{"clause": c, "verdict": verdicts.get(c, "not judged")}
                 for c in level.clauses if verdicts.get(c) != "met"]
        honest = verdicts.get(CAPABILITY_CLAUSE) not in ("failed", "waived")
        levels.append({"id": level.id, "title": level.title, "includes": level.includes,
                       "met": not missing and not unmet and honest,
                       "missing_features": missing, "unmet": unmet,
                       "capability_claims_failed": not honest,
                       "clauses": len(level.clauses)})
    counts = {v: sum(1 for c in clauses if c["verdict"] == v) for v in VERDICTS}
    env = dict(run.get("environment") or {})
    return {
        "certificate_schema": CERTIFICATE_SCHEMA,
        "implementation": {"name": name, "selected_as": info.get("selected_as") or
                           list(run.get("selected") or []),
                           "versions": info.get("versions") or {},
                           "versions_error": info.get("versions_error"),
                           "status": info.get("status"), "capabilities": caps},
        "suite": {"version": run.get("suite_version") or __version__,
                  "profile": profile.name, "profile_doc": profile.doc,
                  "hypothesis_profile": run.get("profile"), "command": run.get("command")},
        "spec": {"layer": spec.layer, "version": spec.version, "sha256": spec.sha256,
                 "path": Path(spec.path).name},
        "environment": env,
        "run": {"run_id": run.get("run_id"), "started": run.get("started"),
                "finished": run.get("finished"), "partial": run.get("partial"),
                "test_seconds": round(sum(r.get("duration_s") or 0 for r in recs), 1)},
        "level": next((lv["id"] for lv in reversed(levels) if lv["met"]), None),
        "levels": levels,
        "summary": counts,
        "legend": VERDICTS,
        "clauses": clauses,
        "failures": failures,
        "waiver_file": waiver_file,
        "waivers": waiver_rows,
        "stale_waivers": sum(1 for w in waiver_rows if w["stale"]),
    }


def _selected_names(run: dict) -> list[str]:
    """The adapter names run.json lists as selected by this command line."""
    return [n for n, info in (run.get("adapters") or {}).items() if info.get("selected_as")]


def render_html(certificate: dict, out: Path) -> Path:
    """Render with the ``certificate`` reporter (registry.reporter)."""
    return registry.reporter("certificate")(certificate, out)


def level_reasons(lv: dict, listed: int = 8) -> list[str]:
    """Why a level of a certificate is not met: features not declared, then
    its clauses by verdict (named when at most ``listed``, else counted)."""
    why = ([f"not declared: {', '.join(lv['missing_features'])}"]
           if lv["missing_features"] else [])
    for verdict in VERDICTS:
        ids = [u["clause"] for u in lv["unmet"] if u["verdict"] == verdict]
        if ids:
            why.append(f"{verdict}: " + (", ".join(ids) if len(ids) <= listed
                                         else f"{len(ids)} clauses"))
    if lv["capability_claims_failed"]:
        why.append("CAPABILITY-CLAIMS failed")
    return why


def summary(cert: dict) -> list[str]:
    impl = cert["implementation"]
    level = cert["level"]
    lines = [f"{impl['name']}: " + (f"level {level} met" if level else "no level met")
             + " (" + ", ".join(f"{n} {v}" for v, n in cert["summary"].items() if n) + ")"]
    for lv in cert["levels"]:
        if lv["met"]:
            lines.append(f"  level {lv['id']}: met ({lv['clauses']} clauses)")
            continue
        lines.append(f"  level {lv['id']}: not met -- " + "; ".join(level_reasons(lv)))
    for f in cert["failures"]:
        lines.append(f"  {f['verdict'].upper()} [{f['clause']}] ({f['test']}) "
                     + (f["note"] or (f["message"].splitlines() or [""])[0])[:200])
        if f["repro"]:
            lines.append(f"    reproduce: {f['repro']}")
    for w in cert["waivers"]:
        if w["stale"]:
            lines.append(f"  STALE waiver {w['where']} ({w['clause']}): no failure of this run "
                         f"matches it; remove it: {w['reason'][:200]}")
    if cert["run"]["partial"]:
        lines.append(f"  PARTIAL run: {cert['run']['partial']}")
    return lines


# --------------------------------------------------------------------------
# Command line


def add_arguments(p) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--adapter", metavar="NAME", help="a registered implementation")
    which.add_argument("--adapter-object", metavar="MODULE:ATTR",
                       help="an in-process adapter of yours (module importable from here)")
    which.add_argument("--adapter-command", metavar="NAME=COMMAND",
                       help="an out-of-process implementation speaking the worker protocol")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                   help="; ".join(f"{p.name}: {p.doc}" for p in PROFILES.values()))
    p.add_argument("--examples", type=int, default=None, metavar="N",
                   help="examples per test instead of the profile's")
    p.add_argument("--level", default=None,
                   help="judge only the clauses of this level (and CAPABILITY-CLAIMS)")
    p.add_argument("--require-level", default=None, metavar="LEVEL",
                   help="exit 1 unless this level is met")
    p.add_argument("--waivers", default=None, metavar="FILE", help="the author's waiver file")
    p.add_argument("--results-dir", default=str(Path("reports") / "certify"),
                   help="where the records, the certificate.json and certificate.html go")
    p.add_argument("--spec", default=None, help="the spec file (default: the one shipped)")
    p.add_argument("-n", "--workers", type=int, default=2)
    p.add_argument("--progress-every", type=float, default=10.0, metavar="S",
                   help="seconds between progress lines on stderr")


def main(args, extra: list[str]) -> int:
    from convlstm_conformance.spec import load
    try:
        spec = load(args.spec) if args.spec else load()
        adapter, waivers = load_waivers(args.waivers, spec) if args.waivers else (None, [])
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for level in (args.level, args.require_level):
        if level is not None and level not in spec.levels:
            print(f"error: unknown level {level!r}; the spec defines "
                  f"{', '.join(spec.levels) or 'none'}", file=sys.stderr)
            return EXIT_USAGE
    if args.progress_every <= 0:
        print("error: --progress-every must be positive", file=sys.stderr)
        return EXIT_USAGE
    if args.adapter:
        selection = ["--adapters", args.adapter]
    elif args.adapter_object:
        selection = ["--adapters", "", "--adapter-object", args.adapter_object]
    else:
        selection = ["--adapters", "", "--adapter-command", args.adapter_command]
    results = Path(args.results_dir)
    profile = PROFILES[args.profile]
    if args.examples is not None:
        if args.examples < 1:
            print("error: --examples must be at least 1", file=sys.stderr)
            return EXIT_USAGE
        profile = Profile(profile.name, args.examples, f"{args.examples} derandomized "
                                                         f"examples per test")
    only = list(spec.levels[args.level].clauses) if args.level else None
    cmd = pytest_command(selection, profile, results, args.workers, args.spec, only, extra)
    log = results / "pytest.log"
    print("certify: running " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    started = time.monotonic()
    code = run_suite(cmd, profile, results, args.progress_every, log)
    if code not in (0, 1):
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:] if log.exists() else ""
        print(f"error: the suite did not run (pytest exit {code}); its output, {log}:\n{tail}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        cert = build(results, spec, waivers, profile, args.waivers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    cert["run"]["wall_s"] = round(time.monotonic() - started, 1)
    if adapter is not None and adapter != cert["implementation"]["name"]:
        print(f"warning: the waiver file is for {adapter!r}, the implementation is "
              f"{cert['implementation']['name']!r}", file=sys.stderr)
    path = results / "certificate.json"
    path.write_text(json.dumps(records.plain(cert), indent=1), encoding="utf-8")
    print("\n".join(summary(cert)))
    print(f"certificate: {path.resolve()}")
    try:
        print(f"certificate: {render_html(cert, results / 'certificate.html').resolve()}")
    except Exception as exc:     # the JSON is written; say why there is no HTML
        print(f"certificate HTML not rendered: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"pytest output: {log.resolve()}")
    failed = any(c["verdict"] == "failed" for c in cert["clauses"])
    missed = args.require_level and not next(
        lv["met"] for lv in cert["levels"] if lv["id"] == args.require_level)
    return EXIT_FAILED if failed or cert["stale_waivers"] or missed else 0
