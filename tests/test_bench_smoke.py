"""``make bench`` cannot rot: its ``--smoke`` mode runs the same code with tiny files.

One smoke run (about 30-40 s) starts every server, moves a 1 MiB file through every path
once, measures the ceilings, memory and the cgroup test, and writes the report. Each target
is then its own test: it passes when its file arrived intact, and is skipped, with the
harness's reason, when its server or tool cannot be installed here (CI installs them all:
nginx-light and iperf3 from Debian, @tus/server from npm, tuspyserver from PyPI).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bench import run
from bench.model import Results
from bench.plans import target_names

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Results, Path]:
    out = tmp_path_factory.mktemp("bench")
    code = run.main(["--smoke", "--out-dir", str(out), "--work-dir", str(out / "work")])
    return code, Results.load(out / "results.json"), out


def test_the_smoke_run_succeeds_and_cleans_up(smoke: tuple[int, Results, Path]) -> None:
    code, results, out = smoke
    assert [s for s in results.samples if not s.ok] == []
    assert code == 0
    assert results.mode == "smoke"
    assert list((out / "work").iterdir()) == []  # the throwaway work directory is gone


@pytest.mark.parametrize("name", target_names())
def test_every_target_moves_the_file_intact(smoke: tuple[int, Results, Path], name: str) -> None:
    _, results, _ = smoke
    if name in results.skipped:
        pytest.skip(results.skipped[name])
    samples = results.samples_of(name)
    assert samples, f"{name} was neither measured nor skipped"
    for sample in samples:
        assert sample.ok, sample.error
        assert sample.seconds is not None and sample.seconds > 0
        assert sample.cpu_seconds is not None and sample.peak_rss_kib
        assert sample.client_cpu_seconds is not None


@pytest.mark.parametrize("name", ["iperf3 loopback", "dd conv=fdatasync"])
def test_machine_ceilings_are_measured(smoke: tuple[int, Results, Path], name: str) -> None:
    _, results, _ = smoke
    if name in results.skipped:
        pytest.skip(results.skipped[name])
    throughput = results.throughput(name)
    assert throughput is not None and throughput.median > 0


def test_memory_rows_cover_sizes_and_concurrency(smoke: tuple[int, Results, Path]) -> None:
    _, results, _ = smoke
    if "freight-memory" in results.skipped:
        pytest.skip(results.skipped["freight-memory"])
    assert [row["uploads"] for row in results.memory] == [1, 1, 1, run.CONCURRENT_UPLOADS]
    for row in results.memory:
        assert row["ok"], row
        assert row["peak_rss_kib"] > 0


def test_uploads_succeed_in_a_memory_cgroup(smoke: tuple[int, Results, Path]) -> None:
    _, results, _ = smoke
    if "cgroup" in results.skipped:
        pytest.skip(results.skipped["cgroup"])
    rows = results.cgroup["uploads"]
    assert rows
    assert [row for row in rows if row["ok"] is False] == []


def test_the_report_has_every_section(smoke: tuple[int, Results, Path]) -> None:
    _, _, out = smoke
    text = (out / "latest.md").read_text()
    for heading in ("## Machine ceilings", "## Uploads", "## Downloads", "## Targets", "## Method"):
        assert heading in text
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed, so no chart")
    assert (out / "latest.png").read_bytes().startswith(b"\x89PNG")
