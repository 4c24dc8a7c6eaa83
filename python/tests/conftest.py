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
