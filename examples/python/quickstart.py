"""medtwin from Python: the README's main results, notebook-style (run each block, or the whole file).

    pip install ./python            # once, from the repository root (Rust toolchain needed)
    python examples/python/quickstart.py [--quick]

Every block prints the number the README states beside it. `--quick` uses fewer particles and a
smaller trial so the whole script runs in a few seconds.
"""

import math
import os
import sys
import tempfile
import time

import medtwin

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(REPO, "tests", "data")
QUICK = "--quick" in sys.argv

# %% 1. Simulate: the README's scenario (adult#001, one day, a 45 g meal and a 4.5 U bolus)
t0 = time.perf_counter()
traj, summary = medtwin.simulate(
    {
        "patient": "adult#001",
        "start": "2018-01-01T00:00:00",
        "duration_min": 1440,
        "controller": {"kind": "basal-bolus", "target_mg_dl": 140},
        "sensor": {"kind": "dexcom", "noise": False, "seed": 1},
        "pump": {"kind": "insulet"},
        "meal": [{"at_min": 420, "carbs_g": 45}],
        "bolus": [{"at_min": 425, "units": 4.5}],
    },
    summary=True,
)
s = summary.to_pylist()[0]
print(f"[simulate] {traj.num_rows} rows in {time.perf_counter() - t0:.3f} s; "
      f"mean {s['mean_mg_dl']:.4f} mg/dL (README 119.3311), TIR {s['tir_pct']:.1f} % (100.0), "
      f"insulin {s['total_insulin_u']:.2f} U (39.42)")
# traj.to_pandas() / polars.from_arrow(traj) for plotting: columns t_min, plasma_glucose_mg_dl, ...

# %% 2. All 30 virtual patients on the reference day vs simglucose 0.2.11 (README: max |d glucose| 2.4e-4)
import csv

ref_day = {
    "patient": "all", "start": "2018-01-01T00:00:00", "duration_min": 1440,
    "controller": {"kind": "basal-bolus", "target_mg_dl": 140},
    "sensor": {"kind": "dexcom", "noise": False, "seed": 1}, "pump": {"kind": "insulet"},
    "meal": [{"at_min": 420, "carbs_g": 45}, {"at_min": 720, "carbs_g": 70}, {"at_min": 1080, "carbs_g": 80}],
}
t0 = time.perf_counter()
all30 = medtwin.simulate(ref_day)
wall = time.perf_counter() - t0
names = medtwin.patients().column("patient").to_pylist()
sc = all30.column("sc_glucose_mg_dl").to_pylist()
worst = 0.0
for k, name in enumerate(names):
    with open(os.path.join(DATA, "simglucose", "ref", f"{name}.csv"), newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            worst = max(worst, abs(sc[k * 1441 + i] - float(row["BG"])))
print(f"[simglucose] 30 patient-days in {wall:.3f} s; max |d glucose| vs simglucose {worst:.1e} mg/dL (README 2.4e-4)")

# %% 3. SBML: one-compartment oral PK against the Bateman function
m = medtwin.sbml.load(os.path.join(DATA, "twin", "oral_pk_1cpt.xml"))
tab = m.simulate(24.0, 97, doses=[(0.0, "A_gut", 100.0)], variables=["C"])
ka, ke, v = m.get("ka"), m.get("ke"), m.get("central")
err = max(abs(c - 100 / v * ka / (ka - ke) * (math.exp(-ke * t) - math.exp(-ka * t)))
          for t, c in zip(tab.column("time").to_pylist(), tab.column("C").to_pylist()))
print(f"[sbml] Bateman: max |error| {err:.1e} mg/L over 24 h")

# %% 4. Pharmacokinetics: NCA of Theoph subject 1 and the FOCE-I population fit (README: logLik -176.992)
theoph = medtwin.pk.import_r("theoph", os.path.join(DATA, "pk", "Theoph.csv"))
nca = medtwin.pk.nca(theoph).to_pylist()[0]
print(f"[pk] NCA subject 1: AUCinf {nca['auc_inf']:.4f} mg/L*h (numpy reference 214.9236), t1/2 {nca['t_half_h']:.3f} h")
fit = medtwin.pk.fit(theoph, "1cpt-oral", parameters=["KE", "KA", "CL"], iiv=["KA", "CL"])
lt = fit.log_theta
print(f"[pk] FOCE-I: logLik {fit.log_likelihood:.3f} (README -176.992; nlme -177.02), "
      f"lKe {lt['KE']:.4f} lKa {lt['KA']:.4f} lCl {lt['CL']:.4f} in {fit.wall_s:.2f} s")

# %% 5. A twin of a real person (T1D-UOM participant 2313): calibrate on 30 h, forecast 4 h
record = medtwin.twin.import_t1d_uom(os.path.join(DATA, "t1d-uom"), "2313")
twin = medtwin.twin.fit(record, until="30h", particles=100 if QUICK else 500)
fc = twin.forecast(240)
last = fc.table.slice(fc.table.num_rows - 1).to_pylist()[0]
print(f"[twin] {twin}: calibration RMSE {twin.calibration['rmse_mg_dl']:.1f} mg/dL; "
      f"+4 h median {last['median_mg_dl']:.0f} mg/dL, 95 % band [{last['lo95_mg_dl']:.0f}, {last['hi95_mg_dl']:.0f}], "
      f"P(<70) {fc.p_below_70:.3f}, P(>250) {fc.p_above_250:.3f}")
later = twin.update(record, until="36h")
print(f"[twin] updated to t = {later.t_min:.0f} min")

# %% 6. An in-silico crossover trial: basal-bolus vs PID on generated adults
spec = {
    "cohort": {"from": "simglucose-30", "group": "adult", "n": 50 if QUICK else 1000, "seed": 7},
    "scenario": {"days": 1, "random_meals_seed": 11, "sensor": {"kind": "dexcom", "noise": True}, "pump": "insulet"},
    "design": {"kind": "crossover"},
    "arm": [{"name": "bb", "controller": {"kind": "basal-bolus", "target_mg_dl": 140}},
            {"name": "pid", "controller": {"kind": "pid"}}],
    "endpoint": [{"metric": "tir_pct"}],
}
with tempfile.TemporaryDirectory() as out:
    r = medtwin.trial.run(spec, out, progress=False)
    eff = r.summary["endpoints"]["tir_pct"]["effect"]
    print(f"[trial] {r.patient_days} patient-days at {r.patient_days_per_s:.0f}/s; TIR pid - bb "
          f"{eff['estimate']:.1f} points [95 % CI {eff['ci95'][0]:.1f}, {eff['ci95'][1]:.1f}]; "
          f"results: {r.results.num_rows} rows")
