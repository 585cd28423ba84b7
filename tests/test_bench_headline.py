"""The benchmark's headline rows (issue 16): freight's GET and hashed tus PATCH get five
interleaved rounds beside nginx, and the hashed upload is judged on its CPU per GiB less the
SHA-256 of the stored file, taken round by round. Pure: no servers."""

from __future__ import annotations

from bench import report, run
from bench.model import Results, Sample, Target

GiB = 1024**3


def test_headline_targets_get_five_rounds_whatever_runs_says() -> None:
    assert run.rounds(3, smoke=False) == [(1, False), (2, False), (3, False), (4, True), (5, True)]
    assert run.rounds(6, smoke=False) == [(n, False) for n in range(1, 7)]
    assert run.rounds(1, smoke=True) == [(1, False)]


def results(tus_cpu: list[float], sha_cpu: list[float], nginx_put_cpu: float) -> Results:
    made = Results(mode="full", size=GiB, runs=len(tus_cpu))
    for name, kind in (
        (report.TUS_NEVER, "upload"),
        ("nginx PUT", "upload"),
        (report.SHA256_CEILING, "ceiling"),
        (report.SHA256_PAGE_CACHE, "ceiling"),
    ):
        server = "freight-never" if name == report.TUS_NEVER else name
        made.add_target(Target(name, kind, server))
    for n, (tus, sha) in enumerate(zip(tus_cpu, sha_cpu, strict=True), start=1):
        made.samples += [
            Sample(report.TUS_NEVER, n, GiB, seconds=1.0, cpu_seconds=tus),
            Sample("nginx PUT", n, GiB, seconds=1.0, cpu_seconds=nginx_put_cpu),
            Sample(report.SHA256_CEILING, n, GiB, seconds=0.5, cpu_seconds=0.5),
            Sample(report.SHA256_PAGE_CACHE, n, GiB, seconds=0.7, cpu_seconds=sha),
        ]
    return made


def goal(measured: Results) -> report.Goal:
    return next(g for g in report.evaluate_goals(measured) if "minus one-core SHA-256" in g.goal)


def test_the_hash_is_taken_off_round_by_round() -> None:
    measured = results([1.5, 1.6, 1.4, 1.5, 1.5], [0.7, 0.8, 0.6, 0.7, 0.7], 0.85)
    overhead = report.hash_overhead(measured, report.TUS_NEVER)
    assert overhead is not None
    assert round(overhead.median, 6) == 0.8 and overhead.count == 5
    assert goal(measured).met is True
    assert goal(results([1.7] * 5, [0.7] * 5, 0.85)).met is False


def test_without_the_page_cache_hash_the_goal_is_not_measured() -> None:
    measured = results([1.5] * 5, [0.7] * 5, 0.85)
    measured.samples = [s for s in measured.samples if s.target != report.SHA256_PAGE_CACHE]
    assert goal(measured).met is None


def test_the_report_shows_the_derived_column_and_the_paired_rows() -> None:
    measured = results([1.5] * 5, [0.7] * 5, 0.85)
    measured.add_target(Target("freight GET", "download", "freight-never"))
    measured.add_target(Target("nginx GET", "download", "nginx"))
    for n in range(1, 6):
        measured.samples += [
            Sample("freight GET", n, GiB, seconds=0.4, cpu_seconds=0.2),
            Sample("nginx GET", n, GiB, seconds=0.5, cpu_seconds=0.25),
        ]
    text = report.render_markdown(measured, None)
    assert "server CPU less SHA-256 s/GiB" in text
    assert (
        "| freight GET / nginx GET | 5 | 1.25 (1.25-1.25) | 0.20 (0.20-0.20) vs 0.25 (0.25-0.25) |"
        in text
    )
    verdicts = {g.goal: g.met for g in report.evaluate_goals(measured)}
    assert verdicts["HTTP download >= 1.0x nginx"] is True
    assert verdicts["HTTP download server CPU/GiB <= nginx's"] is True
