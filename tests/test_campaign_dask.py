"""A campaign sharded on dask.distributed equals the same campaign run in one
process: a real LocalCluster of two worker processes, a real redis-server
as the shared example database, two planted bugs, the same seeds
(core/shards.py, core/campaign.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("dask.distributed", reason="dask.distributed is not installed "
                    "(pip install 'convlstm-conformance[distributed]')")

from convlstm_conformance import campaign, findings  # noqa: E402
from tests.mutant_zoo import object_path  # noqa: E402
from tests.test_example_database import redis_url  # noqa: E402,F401  (the fixture)

ROOT = Path(__file__).resolve().parents[1]


def plan(redis: str = "") -> campaign.Plan:
    return campaign.Plan(
        adapters=[f"object:{object_path('forget_bias_plus_0_01')}",
                  f"object:{object_path('recurrent_layer_padding')}"],
        clauses=["SEM-RECURRENT-CONV"], tests=["numerics"], seed=7, examples=2, rounds=1,
        redis=redis)


def merged(directory: Path, state: dict) -> list[tuple]:
    doc = findings.load(campaign.conclude(directory, state))
    return sorted((f["adapter"], json.dumps(f["signature"], sort_keys=True),
                   tuple(f["clauses"])) for f in doc["findings"])


def test_dask_shards_sharing_redis_merge_to_the_single_process_findings(
        tmp_path, redis_url, monkeypatch):   # noqa: F811
    from convlstm_conformance import shards
    monkeypatch.chdir(ROOT)                  # object: adapters resolve from the checkout
    say = []
    alone = campaign.run_local(tmp_path / "alone", plan(), say=say.append)
    sharded = shards.run_dask(tmp_path / "sharded", plan(redis_url), workers=2,
                              say=say.append)
    assert sorted(s["seed"] for s in alone["shards"]) == sorted(
        s["seed"] for s in sharded["shards"])
    expected = merged(tmp_path / "alone", alone)
    assert len(expected) == 2, expected      # two planted bugs, two findings
    assert merged(tmp_path / "sharded", sharded) == expected
    # The shards were given the one Redis database, not a folder of their own.
    assert not (tmp_path / "sharded" / campaign.EXAMPLES_DB).exists()
    shard = campaign.Shard(0, "x", 1)
    env = campaign.shard_env(plan(redis_url), tmp_path, shard)
    assert env["CONVLSTM_HYPOTHESIS_REDIS"] == redis_url and "CONVLSTM_HYPOTHESIS_DIR" not in env
    assert any("distinct findings" in line for line in say)
