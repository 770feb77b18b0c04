"""Shared fixtures: where the repository and the optional shared sample data live."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture
def criteo_sample() -> Path:
    """200 real Criteo rows; tests that need them skip where ../shared is absent."""
    path = SHARED_DATA / "criteo_sample_200.txt"
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared is optional)")
    return path


@pytest.fixture
def base_params() -> dict:
    """The repository's params.yaml as a mapping, for tests to change one setting of."""
    return yaml.safe_load((REPO / "params.yaml").read_text())
