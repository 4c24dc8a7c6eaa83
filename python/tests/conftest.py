import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    return DATA


@pytest.fixture(scope="session")
def repo_dir() -> pathlib.Path:
    return REPO


def cli_binary():
    """The medtwin CLI, if built: $MEDTWIN_CLI, else target/release or target/debug of the repo."""
    env = os.environ.get("MEDTWIN_CLI")
    if env:
        return pathlib.Path(env)
    found = [
        p
        for p in (REPO / "target" / "release" / "medtwin", REPO / "target" / "debug" / "medtwin")
        if p.is_file() and os.access(p, os.X_OK)
    ]
    # the most recently built one (a stale build of an older checkout would compare other code)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def assert_close(a, b, rel=1e-9, path="$"):
    """Recursive comparison of JSON-like values: floats within ``rel`` (the CLI may be a debug build
    and this package a release build; Rust keeps IEEE semantics, so this is a safety margin)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            assert_close(a[k], b[k], rel, f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, rel, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= rel * max(abs(a), abs(b), 1e-300) or a == b, (path, a, b)
    else:
        assert a == b, (path, a, b)
