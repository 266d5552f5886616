"""Fuzzing campaigns: random exploration that ends in findings, not a pile of failures.

    convlstm-conformance campaign DIR --adapters all --minutes 60
    convlstm-conformance campaign DIR                  # resume DIR's campaign where it stopped

A campaign is a sequence of rounds; a round runs one **shard** per selected
implementation: the suite (``--profile nightly``) on that implementation
alone, in its own pytest process, with its own Hypothesis seed
(``CONVLSTM_HYPOTHESIS_SEED``, core/profiles.py; derived from the campaign's seed, the round and the
implementation, so a campaign is reproducible shard by shard) and its own
results directory, ``DIR/shards/<round>-<implementation>/`` (the records of
docs/records.md).  Every shard shares one Hypothesis example database: a
folder, ``DIR/examples`` (``CONVLSTM_HYPOTHESIS_DIR``), or Redis
(``--redis``, ``CONVLSTM_HYPOTHESIS_REDIS``) when shards run on several
machines, so the failures one round or campaign found are replayed first by
the next.

The campaign's state, ``DIR/campaign.json``, is rewritten after each shard:
an interrupted campaign resumes with the round it was in, and its time budget
counts the time already spent.  Findings (core/findings.py) are computed from
the shards' records: after each shard a progress line says examples, failures,
distinct findings and time left.

Shards run one after another here, or on a dask.distributed cluster
(core/shards.py); either way the merged findings are the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

STATE = "campaign.json"
SHARDS = "shards"
EXAMPLES_DB = "examples"
#: Examples per test in one shard unless the command line says otherwise.
DEFAULT_EXAMPLES = 10
PROFILE = "nightly"


class CampaignError(ValueError):
    """A campaign that cannot start or resume: said plainly, never a traceback."""


@dataclass
class Plan:
    adapters: list[str]                     # registered names or object:MODULE:ATTR
    clauses: list[str] = field(default_factory=list)   # empty: every clause
    tests: list[str] = field(default_factory=list)     # suite modules (numerics, ...); empty: all
    seed: int = 0
    examples: int = DEFAULT_EXAMPLES        # per test, per shard
    minutes: float | None = None            # a time budget, or
    rounds: int | None = None               # a number of rounds
    size: str = "small"
    redis: str = ""                         # share the example database through Redis
    pytest_args: list[str] = field(default_factory=list)

    def check(self) -> None:
        if not self.adapters:
            raise CampaignError("no implementation selected: there is nothing to explore")
        if self.minutes is None and self.rounds is None:
            raise CampaignError("give a budget: --minutes or --rounds")
        if self.minutes is not None and not self.minutes > 0:
            raise CampaignError(f"--minutes must be positive, not {self.minutes}")
        if self.rounds is not None and self.rounds < 1:
            raise CampaignError(f"--rounds must be at least 1, not {self.rounds}")
        if self.examples < 1:
            raise CampaignError(f"--examples must be at least 1, not {self.examples}")


@dataclass(frozen=True)
class Shard:
    round: int
    adapter: str
    seed: int

    @property
    def name(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.adapter)
        return f"{self.round:04d}-{safe}"


def shard_seed(seed: int, round_: int, adapter: str) -> int:
    """The Hypothesis seed of one shard: fixed by the campaign's seed, the round
    and the implementation, whatever ran before it or where it runs."""
    digest = hashlib.sha256(f"{seed}:{round_}:{adapter}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def shards_of_round(plan: Plan, round_: int) -> list[Shard]:
    return [Shard(round_, a, shard_seed(plan.seed, round_, a)) for a in plan.adapters]


# --------------------------------------------------------------------------
# One shard


def clause_filter(clauses: Iterable[str]) -> str:
    """A pytest -k expression selecting the tests of these clauses (test ids
    end in ``-CLAUSE-ID]``, so SEM-STEP does not select SEM-STEP-OTHER)."""
    # Parenthesized: an argument starting with '-' would read as an option.
    return " or ".join(f"(-{c}])" for c in clauses)


def shard_command(plan: Plan, shard: Shard, results: Path) -> list[str]:
    from convlstm_conformance.plugin import SUITE_DIR
    if plan.tests:
        targets = [str(SUITE_DIR / f"test_{t}.py") for t in plan.tests]
    else:
        targets = [str(SUITE_DIR)]
    cmd = [sys.executable, "-m", "pytest", *targets, "--profile", PROFILE,
           "--results-dir", str(results), "--size", plan.size, "--no-report",
           "-p", "no:cacheprovider", "-q", "-rN",
           "-p", "no:xdist"]
    if shard.adapter.startswith("object:"):
        cmd += ["--adapters", "", "--adapter-object", shard.adapter[len("object:"):]]
    else:
        cmd += ["--adapters", shard.adapter]
    if plan.clauses:
        cmd += ["-k", clause_filter(plan.clauses)]
    return cmd + list(plan.pytest_args)


def shard_env(plan: Plan, campaign_dir: Path, shard: Shard) -> dict[str, str]:
    env = dict(os.environ, CONVLSTM_EXAMPLES=str(plan.examples),
               CONVLSTM_HYPOTHESIS_SEED=str(shard.seed))
    env.pop("CONVLSTM_PROFILE", None)
    if plan.redis:
        env["CONVLSTM_HYPOTHESIS_REDIS"] = plan.redis
        env.pop("CONVLSTM_HYPOTHESIS_DIR", None)
    else:
        env.pop("CONVLSTM_HYPOTHESIS_REDIS", None)
        env["CONVLSTM_HYPOTHESIS_DIR"] = str(campaign_dir / EXAMPLES_DB)
    return env


@dataclass
class ShardResult:
    shard: Shard
    results: str            # the shard's results directory, relative to the campaign's
    seconds: float
    exit_code: int | None   # None: stopped at the end of the time budget
    log_tail: str = ""


def run_shard(plan: Plan, shard: Shard, campaign_dir: Path, timeout: float | None = None,
              cwd: str | None = None) -> ShardResult:
    """Run one shard in its own pytest process; a shard still running when
    ``timeout`` seconds are spent is stopped (its records so far are kept:
    the recorder flushes one line per finished test)."""
    results = campaign_dir / SHARDS / shard.name
    results.mkdir(parents=True, exist_ok=True)
    log = results / "pytest.log"
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(shard_command(plan, shard, results), stdout=out,
                                stderr=subprocess.STDOUT, env=shard_env(plan, campaign_dir, shard),
                                cwd=cwd, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            _stop(proc)
        except BaseException:
            _stop(proc)
            raise
    tail = log.read_bytes()[-2000:].decode(errors="replace")
    return ShardResult(shard, str(results.relative_to(campaign_dir)),
                       time.monotonic() - start, code, tail)


def _stop(proc: subprocess.Popen) -> None:
    """End the shard's pytest and its children (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --------------------------------------------------------------------------
# The campaign's state


def load_state(campaign_dir: Path) -> dict | None:
    path = campaign_dir / STATE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        Plan(**state["plan"])
        return state
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CampaignError(f"{path}: not a campaign state file ({exc})") from None


def save_state(campaign_dir: Path, state: dict) -> None:
    path = campaign_dir / STATE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def new_state(plan: Plan) -> dict:
    return {"plan": asdict(plan), "elapsed_s": 0.0, "shards": []}


def done_shards(state: dict) -> set[str]:
    return {s["name"] for s in state["shards"] if s["exit_code"] is not None}


def shard_dirs(campaign_dir: Path, state: dict) -> list[Path]:
    return [campaign_dir / s["results"] for s in state["shards"]]


# --------------------------------------------------------------------------
# Running


def pending(plan: Plan, state: dict) -> Iterable[Shard]:
    """Shards not yet finished, round after round, until the budget ends."""
    done = done_shards(state)
    round_ = 0
    while plan.rounds is None or round_ < plan.rounds:
        for shard in shards_of_round(plan, round_):
            if shard.name not in done:
                yield shard
        round_ += 1


def seconds_left(plan: Plan, state: dict) -> float | None:
    if plan.minutes is None:
        return None
    return plan.minutes * 60 - state["elapsed_s"]


def note(state: dict, result: ShardResult) -> None:
    entry = {"name": result.shard.name, "round": result.shard.round,
             "adapter": result.shard.adapter, "seed": result.shard.seed,
             "results": result.results, "seconds": round(result.seconds, 1),
             "exit_code": result.exit_code}
    state["shards"] = [s for s in state["shards"] if s["name"] != entry["name"]] + [entry]
    state["elapsed_s"] += result.seconds


def progress_line(campaign_dir: Path, state: dict, last: ShardResult | None = None) -> str:
    from convlstm_conformance import findings
    summary = findings.summarize(shard_dirs(campaign_dir, state))
    left = seconds_left(Plan(**state["plan"]), state)
    when = f"{_hms(state['elapsed_s'])} spent" + (f", {_hms(max(left, 0))} left"
                                                  if left is not None else "")
    head = (f"shard {last.shard.name} ({'stopped at the budget' if last.exit_code is None else f'exit {last.exit_code}'}, "
            f"{last.seconds:.0f} s): " if last is not None else "")
    return (f"[campaign {when}] {head}{summary.examples} examples, {summary.failures} "
            f"failures, {summary.distinct} distinct findings, {len(state['shards'])} shards")


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def start_or_resume(campaign_dir: Path, plan: Plan | None) -> tuple[Plan, dict]:
    """The campaign's plan and state: a new one from ``plan``, or the one
    saved in ``campaign_dir`` (a resumed campaign keeps its own plan, except
    for a budget given again, which replaces the old one)."""
    state = load_state(campaign_dir)
    if state is None:
        if plan is None:
            raise CampaignError(f"{campaign_dir}: no campaign to resume (no {STATE}); "
                                f"give --adapters and a budget to start one")
        plan.check()
        campaign_dir.mkdir(parents=True, exist_ok=True)
        state = new_state(plan)
        save_state(campaign_dir, state)
        return plan, state
    saved = Plan(**state["plan"])
    if plan is not None:
        if plan.minutes is not None or plan.rounds is not None:
            saved.minutes, saved.rounds = plan.minutes, plan.rounds
        state["plan"] = asdict(saved)
    saved.check()
    return saved, state


def run_local(campaign_dir: Path, plan: Plan | None = None,
              say: Callable[[str], None] = print) -> dict:
    """Run (or resume) a campaign here, one shard after another."""
    plan, state = start_or_resume(campaign_dir, plan)
    for shard in pending(plan, state):
        left = seconds_left(plan, state)
        if left is not None and left <= 0:
            break
        say(f"[campaign] shard {shard.name}: {shard.adapter}, seed {shard.seed}")
        result = run_shard(plan, shard, campaign_dir, timeout=left)
        note(state, result)
        save_state(campaign_dir, state)
        say(progress_line(campaign_dir, state, result))
        check_exit(result)
    return state


def check_exit(result: ShardResult) -> None:
    """A shard that could not test (pytest's usage error, internal error, no
    test collected) stops the campaign: every later one would fail alike."""
    if result.exit_code not in (None, 0, 1):
        raise CampaignError(f"shard {result.shard.name} ({result.shard.adapter}) ended with "
                            f"pytest exit {result.exit_code}, nothing more can be learned by "
                            f"repeating it:\n{result.log_tail[-1200:]}")


# --------------------------------------------------------------------------
# Command line


def add_parser(sub) -> None:
    c = sub.add_parser("campaign", help="explore at random; failures become findings",
                       description=__doc__.split("\n\n")[0])
    c.add_argument("dir", help="the campaign's folder (state, shards, examples, findings)")
    c.add_argument("--adapters", default=None,
                   help="comma-separated registered names or object:MODULE:ATTR, or 'all' "
                        "(every installed one)")
    c.add_argument("--clauses", default="", help="comma-separated clause ids (default: all)")
    c.add_argument("--tests", default="",
                   help="comma-separated suite modules: numerics, gradients, ... (default: all)")
    c.add_argument("--minutes", type=float, default=None, help="time budget")
    c.add_argument("--rounds", type=int, default=None, help="number of rounds")
    c.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES,
                   help="examples per test in each shard")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--size", choices=["small", "big"], default="small")
    c.add_argument("--redis", default=os.environ.get("CONVLSTM_HYPOTHESIS_REDIS", ""),
                   help="redis://HOST:PORT/DB: the shared example database "
                        "(default: $CONVLSTM_HYPOTHESIS_REDIS, else DIR/examples)")
    c.add_argument("--engine", choices=["local", "dask"], default="local",
                   help="run shards one after another here, or on dask.distributed")
    c.add_argument("--scheduler", default="",
                   help="a dask scheduler address (default: a LocalCluster)")
    c.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    c.add_argument("--no-triage", action="store_true",
                   help="group failures without re-running them (faster, coarser)")


def plan_from_args(args, extra: list[str]) -> Plan | None:
    if args.adapters is None:
        return None if args.minutes is None and args.rounds is None else Plan(
            adapters=[], minutes=args.minutes, rounds=args.rounds)
    names = [n.strip() for n in args.adapters.split(",") if n.strip()]
    if names == ["all"]:
        from convlstm_conformance import registry
        names = registry.installed()
    return Plan(adapters=names, clauses=_csv(args.clauses), tests=_csv(args.tests),
                seed=args.seed, examples=args.examples, minutes=args.minutes,
                rounds=args.rounds, size=args.size, redis=args.redis, pytest_args=extra)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(args, extra: list[str]) -> int:
    from convlstm_conformance import findings
    directory = Path(args.dir)
    plan = plan_from_args(args, extra)
    if plan is not None and not plan.adapters:
        plan = None if load_state(directory) is None else plan   # a new budget for a resume
    try:
        _check_selection(plan)
        if args.engine == "dask":
            from convlstm_conformance import shards
            state = shards.run_dask(directory, plan, scheduler=args.scheduler,
                                    workers=args.workers)
        else:
            state = run_local(directory, plan)
    except CampaignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n[campaign] interrupted; resume with: convlstm-conformance campaign {directory}")
        return 130
    path = conclude(directory, state, triaged=not args.no_triage)
    print(f"[campaign] findings: {path}")
    try:
        print(f"[campaign] report: {render_findings(directory)}")
    except Exception as exc:   # findings.json is written; say why there is no HTML
        print(f"[campaign] no findings page: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 0


def render_findings(directory: Path) -> Path:
    """findings.html, by the ``findings`` reporter (registry.reporter)."""
    from convlstm_conformance import registry
    return registry.reporter("findings")(directory)


def conclude(directory: Path, state: dict, triaged: bool = True) -> Path:
    """Deduplicate the campaign's failures into findings.json, triaged."""
    from convlstm_conformance import findings, triage
    from convlstm_conformance.spec import load_cached
    spec = load_cached()
    cache = triage.Cache(spec) if triaged else None
    try:
        return findings.write(directory, shard_dirs(directory, state), triage=cache, spec=spec,
                              snippets=triaged)
    finally:
        if cache is not None:
            cache.close()


def _check_selection(plan: Plan | None) -> None:
    if plan is None:
        return
    from convlstm_conformance import registry
    for name in plan.adapters:
        if name.startswith("object:"):
            continue
        entry = registry.entry_for(name)
        if entry is None:
            raise CampaignError(f"unknown adapter {name!r}; registered: "
                                + ", ".join(e.name for e in registry.entries()))
        ok, why = entry.available()
        if not ok:
            raise CampaignError(f"adapter {name} cannot run here: {why}")
