"""The scorecard's integrity row sums the violations each of the last 30 daily partitions of integrity_validation
recorded on its latest materialization; none recorded is NOT RUN. The other rows read what they read before."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from dbops.scorecard import Row, build_scorecard

TARGET = "dbops"
ASSET = dg.AssetKey([TARGET, "integrity_validation"])
MIGRATIONS = dg.AssetKey([TARGET, "schema_migrations"])


def day(back: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=back)).isoformat()


class Figures(dg.Config):
    metadata: dict[str, int]


@dg.asset(key=ASSET, partitions_def=dg.DailyPartitionsDefinition(start_date=day(60), timezone="UTC"))
def recorded(config: Figures) -> dg.MaterializeResult:
    """Stands in for integrity_validation: a real materialization of one partition with the figures it is given."""
    return dg.MaterializeResult(metadata=config.metadata)


def record(instance: dg.DagsterInstance, partition: str, **metadata: int) -> None:
    config = {"ops": {recorded.op.name: {"config": {"metadata": metadata}}}}
    assert dg.materialize([recorded], instance=instance, partition_key=partition, run_config=config).success


def rows(instance: dg.DagsterInstance) -> dict[str, Row]:
    card = build_scorecard(instance, TARGET, {ASSET, MIGRATIONS})
    return {r.target.asset: r for r in card.rows}


def test_integrity_row_sums_the_last_30_partitions() -> None:
    with dg.instance_for_test() as instance:
        assert rows(instance)["integrity_validation"].status == "NOT RUN"
        # Written before figures were per partition: no `violations` on the partition, nothing is made up.
        record(instance, day(1), expectations_failed=4)
        assert rows(instance)["integrity_validation"].status == "NOT RUN"

        record(instance, day(1), violations=2)
        record(instance, day(5), violations=1)
        record(instance, day(30), violations=0)
        record(instance, day(31), violations=7)  # 31 days back: outside the last 30 partitions
        row = rows(instance)["integrity_validation"]
        assert (row.measured, row.status) == ("3 in 3 of 30 partitions", "FAIL")

        # A day re-validated clean: its latest materialization counts, not the older one.
        record(instance, day(1), violations=0)
        record(instance, day(5), violations=0)
        row = rows(instance)["integrity_validation"]
        assert (row.measured, row.status) == ("0 in 3 of 30 partitions", "PASS")

        # The other rows are unchanged: pending migrations still reads its check, not built steps say so.
        others = rows(instance)
        assert others["schema_migrations"].status == "NOT RUN"
        assert others["load_test"].status == "NOT BUILT"
