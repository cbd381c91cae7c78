"""docs/SCALE.md holds the scale model's tables as the model computes them, and the model's
projection keeps the properties the design promises at the target."""

from pathlib import Path

from infra.scale_model import LOADS, main, project

ROOT = Path(__file__).resolve().parents[2]


def test_scale_md_holds_the_models_current_tables():
    assert main(["--check", str(ROOT / "docs" / "SCALE.md")]) == 0


def test_at_the_target_every_partition_and_shard_has_headroom_and_the_lag_is_bounded():
    target = project(next(load for load in LOADS if load.name == "target"))
    assert target.redis["engine_per_shard"] <= 0.6 and target.redis["memory_gb_per_shard"] <= 10
    assert target.dynamodb["wcu_hottest_ledger_partition"] <= 0.5 * target.dynamodb["wcu_per_partition_limit"]
    assert target.dynamodb["wcu_hottest_rollup_partition"] <= 0.5 * target.dynamodb["wcu_per_partition_limit"]
    assert target.flush["hottest_busiest_part_per_s"] < target.flush["one_worker_full_per_s"]
    assert target.flush["lag_s"] <= 60
