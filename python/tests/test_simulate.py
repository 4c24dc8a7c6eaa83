"""medtwin.simulate against the README, the CLI and simglucose 0.2.11."""

import csv
import math
import subprocess
import threading
import time

import pytest

import medtwin
from conftest import cli_binary

README_TOML = """
patient = "adult#001"            # or ["child#004", "adult#002"] or "all"
start = "2018-01-01T00:00:00"    # optional wall-clock start
duration_min = 1440
[controller]
kind = "basal-bolus"
target_mg_dl = 140
[sensor]
kind = "dexcom"
noise = false
seed = 1
[pump]
kind = "insulet"
[[meal]]
at_min = 420
carbs_g = 45
[[bolus]]
at_min = 425
units = 4.5
"""

README_DICT = {
    "patient": "adult#001",
    "start": "2018-01-01T00:00:00",
    "duration_min": 1440,
    "controller": {"kind": "basal-bolus", "target_mg_dl": 140},
    "sensor": {"kind": "dexcom", "noise": False, "seed": 1},
    "pump": {"kind": "insulet"},
    "meal": [{"at_min": 420, "carbs_g": 45}],
    "bolus": [{"at_min": 425, "units": 4.5}],
}

COLUMNS = [
    "patient",
    "t_min",
    "plasma_glucose_mg_dl",
    "sc_glucose_mg_dl",
    "cgm_mg_dl",
    "cgm_sampled",
    "insulin_u_per_min",
    "carbs_g_per_min",
]


def test_readme_rows_and_summary():
    traj, summ = medtwin.simulate(README_TOML, summary=True)
    assert traj.column_names == COLUMNS
    assert traj.num_rows == 1441
    rows = traj.slice(0, 2).to_pylist()
    # README: "0,138.56,138.56,138.56,0.021125,0" and
    #         "1,138.5600000000158,138.56000000000074,138.56,0.021125,0"
    assert rows[0]["t_min"] == 0 and rows[0]["plasma_glucose_mg_dl"] == 138.56
    assert rows[0]["insulin_u_per_min"] == 0.021125 and rows[0]["carbs_g_per_min"] == 0
    # (the engine may change the last bits; the CLI comparison below checks exact agreement)
    assert rows[1]["plasma_glucose_mg_dl"] == pytest.approx(138.5600000000158, rel=1e-12)
    assert rows[1]["sc_glucose_mg_dl"] == pytest.approx(138.56000000000074, rel=1e-12)
    assert rows[1]["cgm_mg_dl"] == pytest.approx(138.56, rel=1e-12)
    s = summ.to_pylist()[0]
    # README summary.csv line for adult#001 (printed to 4 or 6 decimals)
    expected = {
        "mean_mg_dl": 119.3311, "sd_mg_dl": 23.9129, "cv_pct": 20.0391, "gmi_pct": 6.1644,
        "tbr54_pct": 0.0, "tbr70_pct": 0.0, "tir_pct": 100.0, "tar180_pct": 0.0, "tar250_pct": 0.0,
        "total_insulin_u": 39.42, "total_carbs_g": 45.0,
    }
    for k, v in expected.items():
        assert round(s[k], 4) == pytest.approx(v, abs=1e-12), k
    for k, v in {"lbgi": 0.476760, "hbgi": 0.972984, "risk_index": 1.449744}.items():
        assert round(s[k], 6) == pytest.approx(v, abs=1e-12), k
    assert s["n_cgm_samples"] == 481  # 3-min Dexcom samples over 24 h
    # 45 g eaten at 420..; carbs column integrates to the meal
    assert sum(traj.column("carbs_g_per_min").to_pylist()) == pytest.approx(45.0, abs=1e-9)


def test_dict_and_toml_give_identical_tables():
    a = medtwin.simulate(README_TOML)
    b = medtwin.simulate(README_DICT)
    assert a.equals(b)


def test_toml_file_path(tmp_path):
    p = tmp_path / "scen.toml"
    p.write_text(README_TOML)
    assert medtwin.simulate(str(p)).equals(medtwin.simulate(p))
    assert medtwin.simulate(p).equals(medtwin.simulate(README_TOML))


def test_summary_only_matches_trajectory_summary():
    _, s1 = medtwin.simulate(README_DICT, summary=True)
    s2 = medtwin.simulate_summary(README_DICT)
    assert s1.equals(s2)


def _three_meals(patients):
    return {
        "patient": patients,
        "start": "2018-01-01T00:00:00",
        "duration_min": 1440,
        "controller": {"kind": "basal-bolus", "target_mg_dl": 140},
        "sensor": {"kind": "dexcom", "noise": False, "seed": 1},
        "pump": {"kind": "insulet"},
        "meal": [
            {"at_min": 420, "carbs_g": 45},
            {"at_min": 720, "carbs_g": 70},
            {"at_min": 1080, "carbs_g": 80},
        ],
    }


def test_all_30_patients_match_simglucose(data_dir):
    """simglucose 0.2.11 reference (tests/data/simglucose): README claims max |dBG| = 2.2e-3 mg/dL
    (the per-state tolerances spend part of the 0.01 mg/dL verification bound of issue 19)."""
    traj = medtwin.simulate(_three_meals("all"))
    names = [p["patient"] for p in medtwin.patients().select(["patient"]).to_pylist()]
    assert len(names) == 30
    assert traj.num_rows == 30 * 1441
    pat = traj.column("patient").to_pylist()
    sc = traj.column("sc_glucose_mg_dl").to_pylist()
    ins = traj.column("insulin_u_per_min").to_pylist()
    worst = 0.0
    for k, name in enumerate(names):
        assert pat[k * 1441] == name and pat[k * 1441 + 1440] == name
        with open(data_dir / "simglucose" / "ref" / f"{name}.csv", newline="") as f:
            ref = list(csv.DictReader(f))
        assert len(ref) == 1441
        for i, r in enumerate(ref):
            worst = max(worst, abs(sc[k * 1441 + i] - float(r["BG"])))
            if i < 1440:
                assert ins[k * 1441 + i] == pytest.approx(float(r["insulin_U_per_min"]), rel=1e-6, abs=1e-9)
    assert worst < 3e-3, worst


def test_matches_cli_output(tmp_path):
    """Same scenario through the CLI binary (when built) gives the same numbers (bit for bit when
    both are release builds; within 1e-12 relative allowed for a debug CLI)."""
    cli = cli_binary()
    if cli is None:
        pytest.skip("medtwin CLI not built (set MEDTWIN_CLI or build target/{release,debug}/medtwin)")
    scen = tmp_path / "s.toml"
    scen.write_text(
        README_TOML.replace('patient = "adult#001"', 'patient = ["child#004", "adult#002"]').replace(
            "noise = false", "noise = true"
        )
    )
    out = tmp_path / "out"
    subprocess.run(
        [str(cli), "simulate", str(scen), "--out", str(out), "--summary", str(tmp_path / "s.csv")],
        check=True,
        capture_output=True,
    )
    traj, summ = medtwin.simulate(scen, summary=True)
    assert traj.num_rows == 2 * 1441
    cols = COLUMNS[1:]
    cols.remove("cgm_sampled")
    py = traj.to_pylist()
    for k, name in enumerate(["child#004", "adult#002"]):
        with open(out / f"{name}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 1441
        for i, r in enumerate(rows):
            got = py[k * 1441 + i]
            assert got["patient"] == name
            for c in cols:
                assert got[c] == pytest.approx(float(r[c]), rel=1e-12, abs=1e-300), (name, i, c)
    with open(tmp_path / "s.csv", newline="") as f:
        cli_summary = list(csv.DictReader(f))
    for row, got in zip(cli_summary, summ.to_pylist()):
        assert row["patient"] == got["patient"]
        for c, v in row.items():
            if c != "patient":
                assert float(v) == pytest.approx(got[c], abs=1e-4), c


def test_noise_is_seeded_and_per_patient():
    s = _three_meals(["adult#001", "adult#001"])
    s["sensor"] = {"kind": "dexcom", "noise": True, "seed": 7}
    t = medtwin.simulate(s)
    cgm = t.column("cgm_mg_dl").to_pylist()
    a, b = cgm[:1441], cgm[1441:]
    assert a != b  # two streams (patient index enters the seed), as in the CLI
    assert medtwin.simulate(s).equals(t)  # reproducible


def test_scenario_errors_name_the_field():
    with pytest.raises(medtwin.ScenarioError, match="patient") as e:
        medtwin.simulate({"patient": "adult#099", "duration_min": 60})
    assert isinstance(e.value, medtwin.InputError) and isinstance(e.value, medtwin.MedtwinError)
    with pytest.raises(medtwin.ScenarioError, match="duration_min"):
        medtwin.simulate({"patient": "adult#001", "duration_min": -5})
    with pytest.raises(medtwin.ScenarioError, match="line 1"):
        medtwin.simulate("patient = = 3\n")
    with pytest.raises(medtwin.ScenarioError):
        medtwin.simulate({"patient": "adult#001", "duration_min": 60, "sensor": None})
    with pytest.raises(medtwin.ScenarioError):
        medtwin.simulate({"patient": "adult#001", "duration_min": float("nan")})
    with pytest.raises(TypeError):
        medtwin.simulate(42)


def test_pandas_free_conversions():
    t = medtwin.simulate({"patient": "child#001", "duration_min": 30})
    d = t.to_pydict()
    assert d["t_min"] == list(range(31))
    assert all(math.isfinite(v) for v in d["plasma_glucose_mg_dl"])
    assert d["cgm_sampled"][:4] == [True, False, False, True]


def test_gil_released_during_simulation():
    """Another Python thread keeps running while patients are simulated."""
    scen = _three_meals("all")
    scen["duration_min"] = 1440 * 20
    done = threading.Event()
    ticks = 0

    def work():
        medtwin.simulate_summary(scen)
        done.set()

    th = threading.Thread(target=work)
    t0 = time.perf_counter()
    th.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.002)
    th.join()
    elapsed = time.perf_counter() - t0
    # The simulation takes a fraction of a second; a held GIL would allow ~no ticks meanwhile.
    assert ticks >= min(10, int(elapsed / 0.004)), (ticks, elapsed)


def test_patients_table():
    p = medtwin.patients()
    assert p.num_rows == 30
    rows = {r["patient"]: r for r in p.to_pylist()}
    assert rows["adult#001"]["basal_glucose_mg_dl"] == pytest.approx(138.56)
    # the pump delivers the basal rounded to its increment: 0.021125 U/min in the trajectory
    assert abs(rows["adult#001"]["basal_u_per_h"] - 0.021125 * 60) < 0.001
