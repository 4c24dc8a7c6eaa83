"""medtwin.twin on the bundled real participant (T1D-UOM 2313), against the CLI when it is built."""

import csv
import json
import subprocess

import pytest

import medtwin
from conftest import assert_close, cli_binary

PARTICLES = 100


@pytest.fixture(scope="module")
def record(data_dir):
    return medtwin.twin.import_t1d_uom(data_dir / "t1d-uom", "2313")


@pytest.fixture(scope="module")
def twin30(record):
    return medtwin.twin.fit(record, until="30h", particles=PARTICLES)


def test_import(record):
    assert record.column_names[:4] == ["time", "kind", "value", "unit"]
    kinds = set(record.column("kind").to_pylist())
    assert {"cgm", "bolus", "carbs"} <= kinds
    n_cgm = sum(1 for k in record.column("kind").to_pylist() if k == "cgm")
    assert n_cgm > 21 * 24 * 4 * 0.9  # 21 days of 15-min (or denser) CGM


def test_fit_and_forecast_invariants(twin30):
    assert twin30.t_min == 1800.0 and twin30.n_particles == PARTICLES
    assert isinstance(twin30.calibration["converged"], bool)
    assert twin30.calibration["rmse_mg_dl"] > 0
    fc = twin30.forecast(120)
    t = fc.table
    assert t.num_rows == 120
    assert t.column("t_min").to_pylist() == [float(k) for k in range(1, 121)]
    rows = t.to_pylist()
    for r in rows:
        seq = [r[c] for c in ("lo95_mg_dl", "lo80_mg_dl", "lo50_mg_dl", "median_mg_dl", "hi50_mg_dl", "hi80_mg_dl", "hi95_mg_dl")]
        assert seq == sorted(seq)
        assert 20 < r["median_mg_dl"] < 600
    # bands widen with the horizon
    assert rows[-1]["hi95_mg_dl"] - rows[-1]["lo95_mg_dl"] > rows[0]["hi95_mg_dl"] - rows[0]["lo95_mg_dl"]
    for p in (fc.p_below_70, fc.p_above_250):
        assert -1e-12 <= p <= 1 + 1e-12


def test_reproducible_and_inputs_agree(record, twin30, tmp_path):
    again = medtwin.twin.fit(record, until=1800, particles=PARTICLES)
    assert again.to_json() == twin30.to_json()
    p = tmp_path / "rec.csv"
    import pyarrow.csv as pacsv

    pacsv.write_csv(record, p)
    from_file = medtwin.twin.fit(p, until="1.25d", particles=PARTICLES)
    assert from_file.forecast(60).table.equals(twin30.forecast(60).table)


def test_save_load_update(record, twin30, tmp_path):
    path = tmp_path / "twin.json"
    twin30.save(path)
    back = medtwin.twin.Twin.load(path)
    assert back.forecast(30).table.equals(twin30.forecast(30).table)
    later = twin30.update(record, until="32h")
    assert later.t_min == 1920.0 and twin30.t_min == 1800.0
    with pytest.raises(medtwin.InputError, match="before the twin"):
        later.update(record, until="31h")


def test_errors(record, tmp_path):
    with pytest.raises(medtwin.InputError, match="calibration window"):
        medtwin.twin.fit(record, until="10h", particles=10)
    with pytest.raises(medtwin.InputError):
        medtwin.twin.fit(record, until="yesterday", particles=10)
    bad = tmp_path / "bad.csv"
    bad.write_text("time,kind,value,unit\n2024-01-01T00:00:00Z,bolus,2,U\n")
    with pytest.raises(medtwin.InputError, match="CGM"):
        medtwin.twin.fit(bad)
    with pytest.raises(medtwin.InputError, match="twin document"):
        medtwin.twin.Twin('{"t_min": 0, "particles": []}')
    with pytest.raises(medtwin.InputError, match="twin document"):
        medtwin.twin.Twin("not json")
    with pytest.raises(TypeError):
        medtwin.twin.fit(42)


def test_matches_cli(record, twin30, tmp_path):
    cli = cli_binary()
    if cli is None:
        pytest.skip("medtwin CLI not built (set MEDTWIN_CLI or build target/{release,debug}/medtwin)")
    import pyarrow.csv as pacsv

    rec = tmp_path / "rec.csv"
    pacsv.write_csv(record, rec)
    tw = tmp_path / "tw.json"
    run = lambda *a: subprocess.run([str(cli), *map(str, a)], check=True, capture_output=True, text=True)
    run("twin", "fit", rec, "--until", "30h", "--particles", PARTICLES, "--out", tw)
    cli_doc, py_doc = json.loads(tw.read_text()), json.loads(twin30.to_json())
    for k in ("t_min", "calibration", "particles", "weights", "log_lik", "schedule", "prior"):
        assert_close(cli_doc[k], py_doc[k], rel=1e-9, path=k)
    out = run("twin", "forecast", tw, "--horizon", 120, "--out", tmp_path / "fc.csv").stdout
    fc = twin30.forecast(120)
    probs = [float(line.rsplit("=", 1)[1]) for line in out.splitlines() if line.startswith("P(")]
    assert probs == [pytest.approx(fc.p_below_70, abs=1.5e-3), pytest.approx(fc.p_above_250, abs=1.5e-3)]
    with open(tmp_path / "fc.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    mine = fc.table.to_pylist()
    assert len(rows) == len(mine) == 120
    for r, m in zip(rows, mine):
        assert float(r["t_min"]) == m["t_min"]
        for c in ("median_mg_dl", "lo50_mg_dl", "hi95_mg_dl"):
            assert float(r[c]) == pytest.approx(m[c], abs=0.006), c  # CLI prints 2 decimals
