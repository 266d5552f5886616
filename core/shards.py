"""A campaign's shards on dask.distributed: more than one machine, one example database.

    convlstm-conformance campaign DIR --adapters all --minutes 60 --engine dask --workers 4
    convlstm-conformance campaign DIR ... --engine dask --scheduler tcp://HOST:8786 \\
        --redis redis://HOST:6379/0

Why dask.distributed: a shard is a plain function call that starts a pytest
process and returns a small record, so all the engine has to do is schedule
function calls on processes and machines.  ``pip install "distributed"`` is
pure Python (~10 MB with dask), a ``LocalCluster`` starts in a second on a
laptop or CI runner, and the same code runs on a cluster (``dask scheduler``
and ``dask worker`` on each machine, or dask-jobqueue/dask-kubernetes).  Ray
would bring a 100 MB wheel, its own object store and a dashboard process,
for nothing a shard needs.

Every shard is the one core/campaign.py runs locally (same command, same
seed: ``campaign.shard_seed``), the database is shared (a Redis URL for
several machines; the campaign's folder on one machine), and the findings
are merged from every shard's records exactly as for a local campaign, so
the merged findings equal a single-process campaign's on the same seeds
(tests/test_campaign_dask.py).  Each worker process runs one shard at a time
(``threads_per_worker=1``): a shard is a whole pytest process already.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from convlstm_conformance import campaign
from convlstm_conformance.campaign import CampaignError, Plan


def _client(scheduler: str, workers: int):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise CampaignError("--engine dask needs dask.distributed: "
                            "pip install 'convlstm-conformance[distributed]'") from None
    if scheduler:
        return Client(scheduler), None
    if workers < 1:
        raise CampaignError(f"--workers must be at least 1, not {workers}")
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster), cluster


def run_dask(campaign_dir: Path, plan: Plan | None = None, scheduler: str = "",
             workers: int = 2, say: Callable[[str], None] = print) -> dict:
    """Run (or resume) a campaign with its shards on a dask cluster: a
    LocalCluster of ``workers`` processes, or the scheduler at ``scheduler``."""
    plan, state = campaign.start_or_resume(Path(campaign_dir).resolve(), plan)
    campaign_dir = Path(campaign_dir).resolve()
    if scheduler and not plan.redis:
        say("[campaign] note: without --redis, workers on other machines do not share "
            f"the example database in {campaign_dir / campaign.EXAMPLES_DB}")
    from dask.distributed import as_completed
    client, cluster = _client(scheduler, workers)
    cwd = os.getcwd()
    started = time.monotonic()
    spent_before = state["elapsed_s"]
    try:
        slots = max(1, len(client.scheduler_info().get("workers", {})) or workers)
        todo = campaign.pending(plan, state)

        def left() -> float | None:
            budget = campaign.seconds_left(plan, state)
            return None if budget is None else budget

        def submit(queue):
            shard = next(todo, None)
            if shard is None:
                return False
            remaining = left()
            if remaining is not None and remaining <= 0:
                return False
            say(f"[campaign] shard {shard.name}: {shard.adapter}, seed {shard.seed}")
            queue.add(client.submit(campaign.run_shard, plan, shard, campaign_dir,
                                    remaining, cwd, pure=False, key=f"shard-{shard.name}"))
            return True

        queue = as_completed([])
        for _ in range(slots):
            if not submit(queue):
                break
        for future in queue:
            result = future.result()
            campaign.note(state, result)
            # Shards overlap: the budget is wall-clock time, not their sum.
            state["elapsed_s"] = spent_before + (time.monotonic() - started)
            campaign.save_state(campaign_dir, state)
            say(campaign.progress_line(campaign_dir, state, result))
            campaign.check_exit(result)
            submit(queue)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return state
