"""examples/python/readme_results.py runs (--quick: 1 day of origins, 100 particles) and its
backtest is the engine's: the twin's 30-min forecast beats persistence on the bundled record."""

import pathlib
import re
import subprocess
import sys

import medtwin

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "examples" / "python" / "readme_results.py"


def test_readme_results_quick(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    ratios = [float(x) for x in re.findall(r"= ([0-9.]+) x persistence", p.stdout)]
    assert len(ratios) == 3, p.stdout
    assert ratios[0] < 1.0, p.stdout
    assert "[twin] updated to t = 2160 min" in p.stdout


def test_backtest_matches_its_own_scores(data_dir):
    rec = medtwin.twin.import_t1d_uom(data_dir / "t1d-uom", "2313")
    m = medtwin.twin.backtest(rec, end="30h", particles=50, horizons=(30, 60))
    assert set(m["horizons"]) == {"30", "60"} and m["n_origins"] == 7
    s = m["horizons"]["30"]
    assert s["n"] == 7 and s["rmse_mg_dl"] > 0 and s["persistence_rmse_mg_dl"] > 0
    again = medtwin.twin.backtest(rec, end="30h", particles=50, horizons=(30, 60))
    assert again["horizons"] == m["horizons"]  # deterministic
    try:
        medtwin.twin.backtest(rec, future_inputs="maybe")
    except ValueError as e:
        assert "future_inputs" in str(e)
    else:
        raise AssertionError("future_inputs='maybe' accepted")
