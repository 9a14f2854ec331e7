"""Put the service package (``python/``) and the test fixtures on ``sys.path``."""

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON_DIR = REPO_ROOT / "python"
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"

for _path in (FIXTURES_DIR, PYTHON_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def python_dir() -> Path:
    return PYTHON_DIR
