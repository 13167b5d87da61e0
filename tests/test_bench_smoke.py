"""The benchmarks' code path at a tiny size, and their figures' arithmetic.

No timing is asserted here: the benchmarks measure, a person reads (bench/README.md).
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import pytest

from bench.ack_latency import LABELS, Options, RunResult, main, report
from bench.common import (
    Row,
    Stats,
    bench_parser,
    format_table,
    main_thread_cpu,
    percentile,
    profile_summary,
)

ROW = re.compile(
    r"^\| (?P<label>.+?) +\| +(?P<n>\d+) \| +(?P<errors>\d+) \| +(?P<p50>[\d.]+) \| "
    r"+(?P<p95>[\d.]+) \| +(?P<p99>[\d.]+) \| +(?P<max>[\d.]+) \| +(?P<ratio>[\d.]+x|-) \|$"
)


def _stats(p99_ms: float, errors: int = 0) -> Stats:
    s = p99_ms / 1000
    return Stats(n=200, errors=errors, p50=s / 2, p95=s, p99=s, max=s)


def test_ack_latency_runs_end_to_end_and_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Five commands, five clicks and five lone commands against a real `stopbot serve
    --http` give one table row per kind, every request answered 200, and medians that are
    ordered p50 <= p99 <= max."""
    code = main(["--runs", "1", "--requests", "5", "--lone", "5", "--provider-latency", "0.05"])

    out = capsys.readouterr().out
    assert code == 0
    rows = {m["label"]: m for m in map(ROW.match, out.splitlines()) if m}
    assert list(rows) == [
        LABELS["baseline"],
        LABELS["commands"],
        LABELS["clicks"],
        LABELS["lone"],
        LABELS["cold"],
    ]
    assert [int(r["n"]) for r in rows.values()] == [5, 5, 5, 5, 1]
    assert [int(r["errors"]) for r in rows.values()] == [0, 0, 0, 0, 0]
    assert rows[LABELS["baseline"]]["ratio"] == "1.0x"
    assert rows[LABELS["cold"]]["ratio"] == "-"
    for row in rows.values():
        assert float(row["p50"]) <= float(row["p95"]) <= float(row["p99"]) <= float(row["max"])
    assert "median of 1 run(s)" in out
    assert "Failed requests" not in out
    [cpu] = [line for line in out.splitlines() if line.startswith("The bot's event loop CPU")]
    commands, clicks = re.findall(r"(?:commands|clicks) (\d+)", cpu)
    assert int(commands) > 0 and int(clicks) > 0


@pytest.mark.skipif(not Path("/proc/self/schedstat").is_file(), reason="no /proc (not Linux)")
def test_main_thread_cpu_is_what_the_main_thread_used() -> None:
    """Nanosecond CPU time of the main thread: at least what the thread itself counts."""
    before, start = main_thread_cpu(os.getpid()), time.thread_time()
    sum(i * i for i in range(300_000))
    used = time.thread_time() - start
    assert main_thread_cpu(os.getpid()) - before >= used * 0.99 > 0
    assert math.isnan(main_thread_cpu(2**22 + 12345))  # no such process


def test_percentile_is_the_nearest_rank() -> None:
    """p99 of 200 samples is the third slowest; p50 of an even count is the lower middle."""
    samples = [float(i) for i in range(200, 0, -1)]  # 200 ... 1, unsorted on purpose

    assert percentile(samples, 99) == 198.0
    assert percentile(samples, 95) == 190.0
    assert percentile(samples, 50) == 100.0
    assert percentile(samples, 100) == 200.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_refuses_nothing_and_nonsense() -> None:
    """An empty sample or a percentile outside (0, 100] is an error that says so."""
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"in \(0, 100\], not 0"):
        percentile([1.0], 0)


def test_stats_median_takes_each_figure_across_runs_and_keeps_the_worst_errors() -> None:
    """Each figure is its own median over the runs; errors are the worst run's, never hidden."""
    runs = [
        Stats(n=10, errors=0, p50=1.0, p95=5.0, p99=9.0, max=10.0),
        Stats(n=10, errors=3, p50=2.0, p95=4.0, p99=7.0, max=30.0),
        Stats(n=10, errors=0, p50=3.0, p95=6.0, p99=8.0, max=20.0),
    ]

    assert Stats.median(runs) == Stats(n=10, errors=3, p50=2.0, p95=5.0, p99=8.0, max=20.0)


def test_stats_of_counts_failures_beside_the_answered() -> None:
    """Failed requests count in n and errors; the times are those of the answered ones."""
    stats = Stats.of([0.010, 0.030, 0.020], errors=1)

    assert stats == Stats(n=4, errors=1, p50=0.020, p95=0.030, p99=0.030, max=0.030)
    assert math.isnan(Stats.of([], errors=2).p99)


def test_format_table_is_an_aligned_markdown_table() -> None:
    """Times in milliseconds with one decimal, numbers right-aligned, '-' for no ratio."""
    table = format_table(
        [
            Row("healthz", Stats(200, 0, 0.0123, 0.02, 0.0301, 0.031), 1.0),
            Row("first", Stats(1, 0, 0.2, 0.2, 0.2, 0.2)),
        ]
    )

    assert table.splitlines() == [
        "| requests |   n | errors | p50 ms | p95 ms | p99 ms | max ms | p99 / baseline |",
        "|----------|----:|-------:|-------:|-------:|-------:|-------:|---------------:|",
        "| healthz  | 200 |      0 |   12.3 |   20.0 |   30.1 |   31.0 |           1.0x |",
        "| first    |   1 |      0 |  200.0 |  200.0 |  200.0 |  200.0 |              - |",
    ]


def test_report_names_each_missed_target_and_each_failed_kind() -> None:
    """--check fails on a p99 at or over 50 ms for commands, clicks or lone commands, or
    any failed request; the baseline and the first request are measured, not held to the
    target."""
    fast = RunResult(_stats(300), _stats(80), _stats(49.9), _stats(10), lone=_stats(49.9))
    slow = RunResult(
        _stats(300), _stats(80), _stats(50.0), _stats(120, errors=2), lone=_stats(51.0)
    )
    options = Options(requests=200)

    assert report([fast], options).missed == []
    assert report([slow], options).missed == [
        "/stop dev-eu (slash command): p99 50.0 ms, target under 50 ms",
        "Confirm click (block_actions): p99 120.0 ms, target under 50 ms",
        "/stop dev-eu alone, at random moments: p99 51.0 ms, target under 50 ms",
        "Confirm click (block_actions): 2 request(s) without a 200",
    ]


def test_report_ratio_is_the_median_of_each_runs_p99_over_its_own_baseline() -> None:
    """The ratio compares a run's p99 with the baseline measured in that same run."""
    runs = [
        RunResult(_stats(1), _stats(10), _stats(40), _stats(30)),
        RunResult(_stats(1), _stats(20), _stats(60), _stats(30)),
        RunResult(_stats(1), _stats(40), _stats(200), _stats(30)),
    ]

    rows = report(runs, Options()).rows

    assert [(row.label, row.ratio) for row in rows[:3]] == [
        (LABELS["baseline"], 1.0),
        (LABELS["commands"], 4.0),
        (LABELS["clicks"], 1.5),
    ]
    assert rows[3].ratio is None


def test_profile_summary_ranks_self_time_and_stopbots_own_calls(tmp_path: Path) -> None:
    """From py-spy's collapsed stacks: shares of samples by innermost function, and by each
    Stopbot function on the stack (counted once a sample, line numbers merged)."""
    recording = tmp_path / "profile.txt"
    recording.write_text(
        "run (asyncio/runners.py:1);SlackBot.actor (bot/slack/app.py:142);"
        "ClientSession.__init__ (aiohttp/client.py:300) 6\n"
        "run (asyncio/runners.py:1);Store.transaction (bot/store.py:250) 3\n"
        "run (asyncio/runners.py:1);EpollSelector.select (selectors.py:468) 1\n",
        encoding="utf-8",
    )

    inner, own = profile_summary(recording)

    assert inner == [
        (0.6, "ClientSession.__init__ (aiohttp/client.py)"),
        (0.3, "Store.transaction (bot/store.py)"),
        (0.1, "EpollSelector.select (selectors.py)"),
    ]
    assert own == [
        (0.6, "SlackBot.actor (bot/slack/app.py)"),
        (0.3, "Store.transaction (bot/store.py)"),
    ]


def test_bench_options_refuse_zero_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """--runs 0 is a usage error (exit 2) with the reason, not a crash later."""
    with pytest.raises(SystemExit) as exit_info:
        bench_parser("bench", "x").parse_args(["--runs", "0"])

    assert exit_info.value.code == 2
    assert "expected at least 1, not 0" in capsys.readouterr().err


def test_discovery_bench_counts_one_paged_list_per_account(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The discovery benchmark at 250 resources an account: every account found them all
    with no more requests than one paged list needs (--check passes)."""
    from bench import discovery

    assert discovery.main(["--resources", "250", "--runs", "1", "--check"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    assert [[cell.strip() for cell in row] for row in rows[2:]] == [
        ["feldera", "250", "1", "1"],
        ["nova", "250", "1", "1"],
        ["okeanos", "250", "4", "4"],
        ["qovery", "250", "1", "1"],
    ]
