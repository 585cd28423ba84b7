"""``make bench`` cannot rot: its ``--smoke`` mode runs the same code with tiny files.

One smoke run (about 30-40 s) starts every server, moves a 1 MiB file through every path
once, measures the ceilings, memory and the cgroup test, and writes the report. The S3
section has a smoke run of its own (about 20 s): an 11 MiB file in 5 MiB parts, so every
target sends several parts into SeaweedFS. Each target
is then its own test: it passes when its file arrived intact, and is skipped, with the
harness's reason, when its server or tool cannot be installed here (CI installs them all:
nginx-light and iperf3 from Debian, @tus/server from npm, tuspyserver from PyPI).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench import baseline, fleet_memory, run, s3_section, s3_services
from bench.model import Results
from bench.plans import target_names
from bench.suite import Source
from bench.worktree import TreeError

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Results, Path]:
    out = tmp_path_factory.mktemp("bench")
    sections = [arg for name in ("transfers", "memory", "cgroup") for arg in ("--section", name)]
    argv = ["--smoke", *sections, "--out-dir", str(out), "--work-dir", str(out / "work")]
    code = run.main(argv)
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


@pytest.mark.parametrize(
    "name",
    [
        "iperf3 loopback",
        "dd conv=fdatasync",
        "sha-256 one core",
        "sha-256 one core from page cache",
        "sha256sum file",
        "openssl dgst -sha256 file",
    ],
)
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


def test_a_fleet_node_is_measured_at_every_size(smoke: tuple[int, Results, Path]) -> None:
    _, results, _ = smoke
    if fleet_memory.NAME in results.skipped:
        pytest.skip(results.skipped[fleet_memory.NAME])
    assert [row["size"] for row in results.fleet_memory] == [
        row["size"] for row in results.memory if row["uploads"] == 1
    ]
    for row in results.fleet_memory:
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


# --- the S3 section: freight node, direct multipart, @tus/server + s3-store ---------------


@pytest.fixture(scope="module")
def s3_smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Results, Path]:
    out = tmp_path_factory.mktemp("bench-s3")
    leftovers = _leftover_clusters()
    argv = ["--smoke", "--section", "s3", "--size-mib", "11", "--s3-part-mib", "5"]
    code = run.main([*argv, "--out-dir", str(out), "--work-dir", str(out / "work")])
    assert _leftover_clusters() == leftovers  # PostgreSQL's directory is gone too
    return code, Results.load(out / "results.json"), out


def _leftover_clusters() -> set[Path]:
    # Only this process's: a benchmark run elsewhere on the machine has clusters of its own.
    pattern = f"{s3_services.PG_DIR_PREFIX}{os.getpid()}-*"
    return set(Path(tempfile.gettempdir()).glob(pattern))


def _skip_if_not_run(results: Results, *names: str) -> None:
    for name in (s3_section.SECTION, *names):
        if name in results.skipped:
            pytest.skip(results.skipped[name])


def test_the_s3_section_runs_and_cleans_up(s3_smoke: tuple[int, Results, Path]) -> None:
    code, results, out = s3_smoke
    _skip_if_not_run(results)
    assert code == 0
    assert [s for s in results.samples if not s.ok] == []
    assert list((out / "work").iterdir()) == []
    text = (out / "latest.md").read_text()
    assert "## Into S3" in text
    assert "| S3: freight >= 0.8x direct multipart |" in text
    assert "| S3: freight >= 1.2x @tus/server + s3-store |" in text


@pytest.mark.parametrize("name", s3_section.TARGETS)
def test_every_s3_target_lands_the_file_intact(
    s3_smoke: tuple[int, Results, Path], name: str
) -> None:
    _, results, _ = s3_smoke
    _skip_if_not_run(results, name)
    [sample] = results.samples_of(name)
    assert sample.ok, sample.error
    assert sample.size == 11 * 1024 * 1024
    assert sample.seconds is not None and sample.seconds > 0
    assert sample.store_cpu_seconds is not None and sample.store_cpu_seconds > 0
    assert sample.client_cpu_seconds is not None and sample.client_cpu_seconds > 0
    if name != s3_section.DIRECT:  # a server between client and store
        assert sample.cpu_seconds is not None and sample.cpu_seconds > 0
        assert sample.peak_rss_kib


def test_the_s3_section_fails_an_upload_whose_object_differs(tmp_path: Path) -> None:
    """The read-back check is real: a source whose recorded SHA-256 is wrong fails each row."""
    path = tmp_path / "source.bin"
    path.write_bytes(b"freight" * 1000)
    source = Source(path, path.stat().st_size, "0" * 64)
    results = Results(mode="smoke", size=source.size, runs=1)
    work = tmp_path / "work"
    s3_section.run_s3_section(results, work, source, s3_section.S3Options(runs=1), lambda _: None)
    _skip_if_not_run(results)
    assert len(results.samples) == len(s3_section.TARGETS) - len(results.skipped)
    for sample in results.samples:
        assert not sample.ok
        assert "SHA-256" in sample.error


# --- make bench BASELINE=<rev>: an older commit served beside the current tree ------------


def _git(repo: Path, *args: str) -> str:
    try:
        result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    except OSError:  # no git here
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _leftover_checkouts() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("freight-baseline-*"))


def _baseline_worktrees(repo: Path) -> list[str]:
    """The repository's worktrees that a baseline run made (other worktrees come and go)."""
    listing = _git(repo, "worktree", "list", "--porcelain").splitlines()
    return [
        line for line in listing if line.startswith("worktree ") and "freight-baseline-" in line
    ]


def test_baseline_mode_compares_every_path_and_removes_its_worktree(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    if not _git(repo, "rev-parse", "HEAD"):
        pytest.skip("not a git checkout, so there is no revision to compare with")
    worktrees, leftovers = _baseline_worktrees(repo), _leftover_checkouts()
    # HEAD itself: a shallow clone may hold no older commit.
    argv = ["--baseline", "HEAD", "--smoke", "--out-dir", str(tmp_path)]
    code = run.main([*argv, "--work-dir", str(tmp_path / "work")])
    data = json.loads((tmp_path / "baseline.json").read_text())
    rows = {row["path"]: row for row in data["comparison"]}
    assert code == 0
    assert list(rows) == list(baseline.PATHS)
    for row in rows.values():
        assert row["intact"] == "2/2", row
        assert row["old"]["median"] > 0 and row["new"]["median"] > 0
        assert row["ratio"] is not None and row["old_peak_rss_mib"] is not None
        assert row["verdict"] == row["cpu_verdict"] == "one round"  # no noise from one round
        assert row["paired"]["count"] == 1
    old, new = data["run"]["machine"]["old"], data["run"]["machine"]["new"]
    assert old.startswith("HEAD = ") and old.split()[2] == new.split()[0].removesuffix("-dirty")
    assert "| tus PATCH |" in (tmp_path / "baseline.md").read_text()
    assert _baseline_worktrees(repo) == worktrees
    assert _leftover_checkouts() == leftovers
    assert list((tmp_path / "work").iterdir()) == []


def test_baseline_mode_removes_its_worktree_when_the_old_tree_fails(tmp_path: Path) -> None:
    """A commit without freight in it: the run stops, and nothing of it is left behind."""
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "README").write_text("no freight here\n")
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    for args in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-q", "-m", "empty"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    leftovers = _leftover_checkouts()
    options = baseline.BaselineOptions(
        "HEAD",
        runs=1,
        size=64 * 1024,
        smoke=True,
        out_dir=tmp_path / "out",
        work=tmp_path / "work",
        repo=repo,
    )
    with pytest.raises(TreeError, match="imports freight from"):
        baseline.run_baseline(options, {})
    assert _git(repo, "worktree", "list").count("\n") == 0  # only the main tree
    assert _baseline_worktrees(repo) == []
    assert _leftover_checkouts() == leftovers
    assert not (tmp_path / "out" / "baseline.json").exists()


def test_baseline_mode_measures_only_the_paths_asked_for(tmp_path: Path) -> None:
    if not _git(Path(__file__).resolve().parents[1], "rev-parse", "HEAD"):
        pytest.skip("not a git checkout, so there is no revision to compare with")
    argv = ["--baseline", "HEAD", "--smoke", "--only", "GET", "--out-dir", str(tmp_path)]
    assert run.main([*argv, "--work-dir", str(tmp_path / "work")]) == 0
    data = json.loads((tmp_path / "baseline.json").read_text())
    assert [row["path"] for row in data["comparison"]] == ["GET"]
    assert {s["target"] for s in data["run"]["samples"]} == {"GET [old]", "GET [new]"}
