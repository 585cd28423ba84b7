"""A throwaway checkout of an older commit, to serve freight from beside the current tree.

``git worktree add --detach`` puts the commit in a fresh temporary directory (the repository's
objects are shared, so it takes a moment, not a clone); the server started from it gets the
checkout's ``src`` first on ``PYTHONPATH`` and the same interpreter and packages as the
current tree. The checkout and its entry in the repository are removed when the block ends,
whether it ends well or not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Tree", "TreeError", "checkout", "describe", "imported_from", "python_env"]

GIT_TIMEOUT = 120.0


class TreeError(Exception):
    """git refused (not a repository, an unknown revision) or the tree does not import."""


@dataclass(frozen=True)
class Tree:
    """A source tree of freight: which commit, and where its ``src`` is."""

    label: str  # the revision as asked for, or "current"
    commit: str  # full hash, with "-dirty" when the working tree has changes
    subject: str
    src: Path

    @property
    def short(self) -> str:
        commit, dirty, _ = self.commit.partition("-dirty")
        return commit[:12] + dirty


def _git(repo: Path, *args: str) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TreeError(f"git {args[0]}: {exc}") from exc
    if result.returncode != 0:
        raise TreeError(f"git {' '.join(args)}: {result.stderr.strip()[-400:]}")
    return result.stdout.strip()


def describe(repo: Path, label: str = "current") -> Tree:
    """The tree at ``repo`` as it is on disk (uncommitted changes included)."""
    commit = _git(repo, "rev-parse", "HEAD")
    if _git(repo, "status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    subject = _git(repo, "log", "-1", "--format=%s", "HEAD")
    return Tree(label, commit, subject, repo / "src")


@contextmanager
def checkout(repo: Path, rev: str) -> Iterator[Tree]:
    """``rev`` checked out in a temporary worktree for the duration of the block."""
    commit = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}")
    subject = _git(repo, "log", "-1", "--format=%s", commit)
    parent = Path(tempfile.mkdtemp(prefix="freight-baseline-"))
    path = parent / "tree"
    try:
        _git(repo, "worktree", "add", "--detach", "--quiet", str(path), commit)
        yield Tree(rev, commit, subject, path / "src")
    finally:
        if path.exists():
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "remove", "--force", str(path)],
                capture_output=True,
                timeout=GIT_TIMEOUT,
                check=False,
            )
        shutil.rmtree(parent, ignore_errors=True)
        # Drops the repository's record of the worktree even when removing it failed.
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "prune"],
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )


def python_env(src: Path) -> dict[str, str]:
    """Environment in which ``python -m freight`` runs the code under ``src``."""
    rest = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(src) + (os.pathsep + rest if rest else "")}


def imported_from(src: Path) -> Path:
    """Where ``import freight`` resolves with ``python_env(src)``: proves which code runs."""
    result = subprocess.run(
        [sys.executable, "-c", "import freight; print(freight.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **python_env(src)},
    )
    if result.returncode != 0:
        raise TreeError(f"freight does not import from {src}: {result.stderr.strip()[-400:]}")
    return Path(result.stdout.strip())
