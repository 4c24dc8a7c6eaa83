"""examples/python/quickstart.py --quick runs to the end (it prints the README's numbers)."""

import subprocess
import sys


def test_quickstart_runs(repo_dir, tmp_path):
    script = repo_dir / "examples" / "python" / "quickstart.py"
    out = subprocess.run(
        [sys.executable, str(script), "--quick"], cwd=tmp_path, check=True, capture_output=True, text=True, timeout=600
    ).stdout
    assert "mean 119.3311 mg/dL" in out
    for tag in ("[simglucose]", "[sbml]", "[pk] NCA", "[pk] FOCE-I", "[twin]", "[trial]"):
        assert tag in out
