"""Fixtures of the containers tier: the manifest and the compose file."""

from __future__ import annotations

from typing import Any

import pytest

from infra.manifest import Manifest, load

from .support import REPO, load_yaml


@pytest.fixture(scope="session")
def manifest() -> Manifest:
    return load()


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(REPO / "docker-compose.yml")
    return data
