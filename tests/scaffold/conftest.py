"""A throwaway copy of this working tree (tracked and new files, as a fresh git repository)
where `make new-service` may write: the repository itself is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would point a child at this repository."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "SERVICE_MANIFEST", "STACK_RUN_DIR", "UV_PROJECT_ENVIRONMENT"}
    }
    env["PATH"] = f"{Path.home() / '.local/bin'}:{env.get('PATH', '')}"
    return {**env, **extra}


def copy_tree(destination: Path) -> Path:
    """The working tree's files (tracked and untracked, not ignored), committed in a new repo:
    copier reads its template from git."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git = ["git", "-c", "user.name=scaffold", "-c", "user.email=scaffold@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=destination, check=True)
    subprocess.run(["git", "add", "-A"], cwd=destination, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "copy"], cwd=destination, check=True)
    return destination


@pytest.fixture(scope="session")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield copy_tree(tmp_path_factory.mktemp("scaffold") / "repo")
