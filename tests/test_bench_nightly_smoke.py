"""The nightly-run and baseline benchmarks' code path at a tiny size, and their arithmetic.

No timing is asserted here: the benchmarks measure, a person reads (bench/README.md).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from bench import baseline, nightly_run
from bench.nightly_run import (
    Options,
    RunResult,
    bot_config,
    floor_seconds,
    ideal_seconds,
    make_estate,
    misses,
)
from bot.config import parse_config
from tests.pg import PostgresServer

ROW = re.compile(
    r"^\| +(?P<n>\d+) \| +(?P<runs>\d+) \| +(?P<wall>[\d.]+) \| +(?P<floor>[\d.]+) \| "
    r"+(?P<ratio>[\d.]+) \| +(?P<script>[\d.]+) \| +(?P<script_ratio>[\d.]+) \| "
    r"+(?P<ideal>[\d.]+) \| +(?P<calls>[\d.]+) \| +(?P<peak>\d+) \| +(?P<slack>\d+) "
    r"\((?P<budget>\d+)\) \| +(?P<rss>[\d.]+) \| +(?P<cpu>[\d.]+) \([\d.]+\) \| "
    r"+(?P<stopped>\d+/\d+) \|$"
)
TINY = ["--stop-seconds", "1", "--provider-latency", "0.02"]


def _result(
    n: int, wall: float, floor: float, rss: float, stopped: int, calls: float = 1.1
) -> RunResult:
    return RunResult(
        n=n,
        wall=wall,
        ideal=127.5,
        provider_calls=round(calls * n),
        provider_calls_by_api={},
        slack_calls={"chat.postMessage": 1, "chat.update": 2},
        summary_updates=2,
        rss_mb=rss,
        outcomes={"stopped": stopped},
        floor=floor,
        script_wall=wall / 1.1,
        peak_in_flight=10,
    )


def test_nightly_run_stops_every_resource_and_prints_one_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Eight resources over a real `stopbot serve --http` all end stopped, after the asyncio
    script stopped them too, and the table has one row for the size with its wall time, the
    floor, the script's time, a Slack call count and its budget, and requests in flight
    never past the account's limit."""
    code = nightly_run.main(["--resources", "8", "--runs", "1", *TINY])

    out = capsys.readouterr().out
    assert code == 0
    rows = [m for m in map(ROW.match, out.splitlines()) if m]
    assert len(rows) == 1
    [row] = rows
    assert (row["n"], row["runs"], row["stopped"]) == ("8", "1", "8/8")
    assert row["floor"] == "1.0"  # one wave of 2 a provider: a 20 ms call, then a 1 s stop
    assert row["ideal"] == "1.0"
    assert float(row["wall"]) > 0 and float(row["script"]) > 0
    assert 1 <= int(row["peak"]) <= 10
    assert float(row["calls"]) > 0
    assert int(row["slack"]) >= 1  # at least the summary's post
    assert "medians of 1 run(s)" in out


def test_nightly_run_on_postgresql_leaves_no_schema_behind(
    capsys: pytest.CaptureFixture[str], postgres_server: PostgresServer
) -> None:
    """With --database-url the bot keeps its store on that PostgreSQL server (a schema of
    the run's own, where its stops are recorded), stops every resource, says which store
    the figures are of, and the schema is dropped afterwards."""
    seen: list[tuple[str, int]] = []
    fresh = nightly_run.fresh_database

    @contextlib.contextmanager
    def watched(url: str | None) -> Iterator[str | None]:
        with fresh(url) as location:
            yield location
            schema = str(location).rpartition("schema=")[2]
            with psycopg.connect(postgres_server.url) as conn:
                row = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}.operations WHERE state = 'stopped'").format(
                        sql.Identifier(schema)
                    )
                ).fetchone()
            seen.append((schema, int(row[0]) if row else 0))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nightly_run, "fresh_database", watched)
        code = nightly_run.main(
            ["--resources", "8", "--runs", "1", "--database-url", postgres_server.url, *TINY]
        )

    out = capsys.readouterr().out
    assert code == 0
    [row] = [m for m in map(ROW.match, out.splitlines()) if m]
    assert row["stopped"] == "8/8"
    assert "store PostgreSQL" in out
    [(schema, stopped)] = seen
    assert schema.startswith("bench_") and stopped == 8
    with psycopg.connect(postgres_server.url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", [schema]
        ).fetchone()
    assert left == (0,)


def test_baseline_stops_every_resource_and_compares_with_the_bot(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The cron script and the bot each stop all eight resources; the script makes one stop
    call and at least one status read per resource, and the bot's row carries a ratio."""
    code = baseline.main(["--resources", "8", "--runs", "1", *TINY])

    out = capsys.readouterr().out
    assert code == 0
    cron = next(line for line in out.splitlines() if line.startswith("| cron script"))
    bot = next(line for line in out.splitlines() if line.startswith("| Stopbot nightly"))
    cron_cells = [c.strip() for c in cron.strip("|").split("|")]
    bot_cells = [c.strip() for c in bot.strip("|").split("|")]
    assert cron_cells[1] == "8" and cron_cells[4] == "8/8" and cron_cells[5] == "1.00"
    # One keystone token, then per resource: a stop and one or more status reads.
    assert float(cron_cells[3]) >= 2.0
    assert bot_cells[1] == "8" and bot_cells[4] == "8/8"
    assert float(bot_cells[5]) > 0


def test_estate_splits_resources_evenly_and_seeds_each_provider() -> None:
    """Ten resources go 3, 3, 2, 2 to the providers, each running, and each okeanos
    resource names the lambda instance its application is deployed on."""
    estate = make_estate(10, stop_seconds=5.0)

    assert estate.per_provider == {"qovery": 3, "nova": 3, "okeanos": 2, "feldera": 2}
    assert len(estate.resources) == 10
    assert len({r["name"] for r in estate.resources}) == 10
    assert estate.seed["qovery"]["step_seconds"] == 2.5  # two steps to STOPPED
    assert estate.seed["nova"]["step_seconds"] == 5.0
    [instance] = estate.seed["okeanos"]["lambda_instances"]
    okeanos = [r for r in estate.resources if r["provider"] == "okeanos"]
    assert {r["lambda_instance_id"] for r in okeanos} == {instance["id"]}
    assert all(r["tags"] == {"env": "bench"} for r in estate.resources)


def test_bot_config_is_valid_and_schedules_every_resource() -> None:
    """The stopbot.yaml the bench writes passes the bot's own validation, with the poll
    settings and requests in flight asked for and one forced schedule selecting all 12."""
    options = Options(concurrency=7, poll_interval=0.5, batch_window=0.25)
    document = bot_config(make_estate(12, 1.0), "http://127.0.0.1:9", options)

    config = parse_config(document, "bench")

    assert len(config.resources) == 12
    assert {p.requests.max_in_flight for p in config.providers} == {7}
    assert {p.requests.max_per_second for p in config.providers} == {None}
    assert config.deprecations() == []
    assert config.stops.poll_initial.total_seconds() == 0.5
    assert config.stops.poll_max.total_seconds() == 0.5
    assert config.stops.poll_batch_window.total_seconds() == 0.25
    [schedule] = config.schedules
    assert (schedule.name, schedule.channel, schedule.force) == ("nightly", "C0BENCH", True)


def test_ideal_is_the_slowest_providers_waves() -> None:
    """1,000 resources at concurrency 10: 25 waves of a 5 s stop and a 100 ms call."""
    options = Options(provider_latency=0.1, stop_seconds=5.0, concurrency=10)

    assert ideal_seconds(make_estate(1000, 5.0), options) == pytest.approx(127.5)
    assert ideal_seconds(make_estate(1001, 5.0), options) == pytest.approx(132.6)


def test_floor_is_sending_the_stops_then_the_last_stop() -> None:
    """The issue's floor: 1,000 resources, 10 requests at once, 100 ms a call, 5 s stops:
    25 waves of calls (2.5 s) and the last stop (5 s), 7.5 s; 10,000: 30 s."""
    options = Options(provider_latency=0.1, stop_seconds=5.0, concurrency=10)

    assert floor_seconds(make_estate(1000, 5.0), options) == pytest.approx(7.5)
    assert floor_seconds(make_estate(10000, 5.0), options) == pytest.approx(30.0)


def test_misses_names_each_target_missed() -> None:
    """A wall 1.4 times the floor, 1.3 calls a resource, 210 MB and a resource left running
    are each reported; a run within the targets is not."""
    good = {1000: [_result(1000, 9.0, 7.5, 90.0, 1000)]}
    bad = {1000: [_result(1000, 10.5, 7.5, 210.0, 999, calls=1.3)]}

    assert misses(good) == []
    assert misses(bad) == [
        "1000 resources: wall / floor 1.400, target at most 1.3",
        "1000 resources: 1.30 provider calls a resource, target 1.2",
        "1000 resources: peak RSS 210.0 MB, target at most 200 MB",
        "1000 resources: a run ended with {'stopped': 999}, not all stopped",
    ]


def test_bad_sizes_get_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`--sizes 100,abc` exits with a usage error that shows the expected form."""
    with pytest.raises(SystemExit) as exited:
        nightly_run.main(["--sizes", "100,abc"])

    assert exited.value.code == 2
    assert "expected sizes like 100,1000,5000, not '100,abc'" in capsys.readouterr().err
