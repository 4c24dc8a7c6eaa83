#!/usr/bin/env python3
"""medtwin-sbml vs libRoadRunner on PEtab benchmark models, in one run on one machine.

For each model in ../shared/reference/petab-benchmarks/Benchmark-Models/:
  * nominal parameters: every parameter of the PEtab parameter table that is a model parameter
    gets its `nominalValue` (linear scale, as PEtab stores it); the simulation condition with the
    most measurements is applied (condition-table columns set parameters, species initial
    values or compartment sizes; values are numbers or parameter-table ids); initial
    assignments of overridden targets are removed. The prepared SBML is written once and both
    simulators read the same file.
  * span: 0 to the largest measurement time; 1000 output intervals (1001 points).
  * tolerances: rtol 1e-6, atol 1e-12 for both (libRoadRunner's CVODE defaults).
  * load+compile: libRoadRunner `RoadRunner(path)` timed in a fresh subprocess (no model cache),
    median of 3; medtwin `load_sbml` median of 5 (it has no cache).
  * simulation: 3 alternating rounds of 5 runs each (`rr.resetAll(); rr.simulate(0, T, 1001)` vs
    `medtwin_sbml::simulate`); median and fastest of the 15.
  * agreement: per species, max over output times of |medtwin − roadrunner| divided by the
    species' largest |roadrunner| value; the table shows the worst species.

Usage (Python is not part of the build; `pip install libroadrunner`):
  cargo build --release -p medtwin-sbml --example sbml_bench
  python3 benchmarks/sbml_vs_roadrunner.py [--bench-bin target/release/examples/sbml_bench]
      [--models all|NAME,NAME --out OTHER.md]   (default: the five models of the issue)
Writes benchmarks/sbml_vs_roadrunner.md.
"""

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

# Simulations are timed in ROUNDS alternating rounds (medtwin, then libRoadRunner) of REPEAT runs
# each, so that both see the same machine load; the table reports the median and the fastest run.
ROUNDS = 3
REPEAT = 5

MODELS = [
    "Boehm_JProteomeRes2014",
    "Bachmann_MSB2011",
    "Lucarelli_CellSystems2018",
    "Smith_BMCSystBiol2013",
    "Chen_MSB2009",
]
# Lucarelli's conditions with the most data (model1_data1, model1_data9) are unstimulated
# controls (TGFb = 0) whose trajectory is constant; take the first stimulated one instead.
CONDITION = {"Lucarelli_CellSystems2018": "model1_data2"}
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PETAB = os.path.join(ROOT, "..", "shared", "reference", "petab-benchmarks", "Benchmark-Models")


def read_tsv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def prepare(name, outdir):
    d = os.path.join(PETAB, name)
    params = {r["parameterId"]: float(r["nominalValue"]) for r in read_tsv(os.path.join(d, f"parameters_{name}.tsv"))}
    meas = read_tsv(os.path.join(d, f"measurementData_{name}.tsv"))
    t_end = max(float(r["time"]) for r in meas)
    counts = {}
    for r in meas:
        counts[r["simulationConditionId"]] = counts.get(r["simulationConditionId"], 0) + 1
    cond_id = CONDITION.get(name) or max(counts, key=lambda c: counts[c])  # most data
    conds = read_tsv(os.path.join(d, f"experimentalCondition_{name}.tsv"))
    cond = next(c for c in conds if c["conditionId"] == cond_id)
    tree = ET.parse(os.path.join(d, f"model_{name}.xml"))
    root = tree.getroot()
    ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
    ET.register_namespace("", ns.strip("{}"))
    model = root.find(f"{ns}model")
    by_id = {}
    for kind in ("parameter", "species", "compartment"):
        for el in model.iter(f"{ns}{kind}"):
            if el.get("id"):
                by_id[el.get("id")] = (kind, el)
    overridden = set()
    n_params = 0
    for pid, v in params.items():
        if pid in by_id and by_id[pid][0] == "parameter":
            by_id[pid][1].set("value", repr(v))
            overridden.add(pid)
            n_params += 1
    for col, raw in cond.items():
        if col in ("conditionId", "conditionName") or col not in by_id or raw == "":
            continue
        try:
            v = float(raw)
        except ValueError:
            v = params.get(raw)
            if v is None:
                continue
        kind, el = by_id[col]
        if kind == "parameter":
            el.set("value", repr(v))
        elif kind == "compartment":
            el.set("size", repr(v))
        elif el.get("initialAmount") is not None:
            el.set("initialAmount", repr(v))
        else:
            el.attrib.pop("initialAmount", None)
            el.set("initialConcentration", repr(v))
        overridden.add(col)
    lia = model.find(f"{ns}listOfInitialAssignments")
    if lia is not None:
        for ia in list(lia):
            if ia.get("symbol") in overridden:
                lia.remove(ia)
    path = os.path.join(outdir, f"{name}.xml")
    tree.write(path, xml_declaration=True, encoding="UTF-8")
    return path, t_end, cond_id, n_params


RR_LOAD = r"""
import sys, time, roadrunner
t = time.perf_counter()
rr = roadrunner.RoadRunner(sys.argv[1])
print((time.perf_counter() - t) * 1e3)
"""


def rr_load_ms(path):
    out = []
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", RR_LOAD, path], capture_output=True, text=True)
        if r.returncode != 0:
            return None, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"
        out.append(float(r.stdout.strip().splitlines()[-1]))
    return statistics.median(out), None


def rr_setup(path):
    import roadrunner

    rr = roadrunner.RoadRunner(path)
    rr.integrator.relative_tolerance = 1e-6
    rr.integrator.absolute_tolerance = 1e-12
    species = list(rr.model.getFloatingSpeciesIds()) + list(rr.model.getBoundarySpeciesIds())
    rr.timeCourseSelections = ["time"] + [f"[{s}]" for s in species]
    return rr, species


def rr_sims(rr, t_end, n=REPEAT):
    times = []
    res = None
    for _ in range(n):
        # resetAll: reset() keeps boundary species and parameters changed by events (Smith's
        # insulin), so a second run would start from the first run's final input state.
        rr.resetAll()
        t = time.perf_counter()
        res = rr.simulate(0, t_end, 1001)
        times.append((time.perf_counter() - t) * 1e3)
    return times, res


LIMIT_S = 120


def medtwin(bin_path, path, t_end, out_csv):
    r = subprocess.run(
        [bin_path, path, "--end", repr(t_end), "--steps", "1000", "--repeat", str(REPEAT),
         "--rtol", "1e-6", "--atol", "1e-12", "--all-concentrations", "--limit-s", str(LIMIT_S),
         "--out", out_csv],
        capture_output=True, text=True, env=dict(os.environ, MEDTWIN_SBML_STATS="1"),
    )
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "{}"
    out = json.loads(line)
    stats = [l for l in r.stderr.splitlines() if l.startswith("dopri5:")]
    if stats:
        # "dopri5: A rhs, B accepted, C rejected; stiff: <method and its counts>"
        d, _, st = stats[-1].partition("; stiff: ")
        if st.strip() != "unused":
            out["solver"] = st.strip()
        else:
            out["solver"] = "DOPRI5, " + d.replace("dopri5: ", "")
    if "error" in out and "time limit" in out["error"]:
        out["error"] = f"simulation did not finish within {LIMIT_S} s"
    return out


def agreement(out_csv, species, res):
    with open(out_csv) as f:
        rows = list(csv.reader(f))
    header = rows[0]
    data = [[float(v) for v in r] for r in rows[1:]]
    worst = 0.0
    for k, s in enumerate(species):
        if s not in header:
            continue
        j = header.index(s)
        ref = [float(res[i, k + 1]) for i in range(len(data))]
        scale = max(abs(v) for v in ref) if ref else 0.0
        diff = max(abs(row[j] - ref[i]) for i, row in enumerate(data))
        # Species that stay below 1e-12 (the absolute tolerance) in both are compared absolutely.
        worst = max(worst, diff / max(scale, 1e-12))
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-bin", default=os.environ.get("SBML_BENCH_BIN", os.path.join(ROOT, "target", "release", "examples", "sbml_bench")))
    ap.add_argument("--out", default=os.path.join(HERE, "sbml_vs_roadrunner.md"))
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma-separated PEtab model names, or 'all' for every model folder")
    args = ap.parse_args()
    models = (sorted(d for d in os.listdir(PETAB) if os.path.isdir(os.path.join(PETAB, d)))
              if args.models == "all" else args.models.split(","))
    import roadrunner

    tmp = tempfile.mkdtemp(prefix="sbml_bench_")
    load_before = os.getloadavg()[0]
    lines = []
    for name in models:
        try:
            path, t_end, cond, n_params = prepare(name, tmp)
        except Exception as e:  # incomplete PEtab folders
            print(f"{name}: not prepared ({type(e).__name__}: {e})", flush=True)
            continue
        if t_end != t_end or t_end in (float("inf"), float("-inf")) or t_end <= 0:
            print(f"{name}: no finite positive measurement span", flush=True)
            continue
        out_csv = os.path.join(tmp, f"{name}.csv")
        rl, rerr = rr_load_ms(path)
        rr, species = (None, []) if rerr else rr_setup(path)
        mt_times, rr_times, res, mt = [], [], None, {}
        for _ in range(ROUNDS):
            mt = medtwin(args.bench_bin, path, t_end, out_csv)
            mt_times += mt.get("sim_all_ms", [])
            if rr is not None:
                try:
                    ts, res = rr_sims(rr, t_end)
                    rr_times += ts
                except Exception as e:  # CVODE failures
                    rerr, rr, res = f"simulation failed ({str(e).splitlines()[0][:80]})", None, None
            if "sim_ms" not in mt:
                break
        agree = None
        if "sim_ms" in mt and res is not None:
            agree = agreement(out_csv, species, res)
        med = lambda v: statistics.median(v) if v else None
        row = dict(model=name, t_end=t_end, condition=cond, n_params=n_params, states=mt.get("states"),
                   solver=mt.get("solver"),
                   mt_load=mt.get("load_ms"), mt_sim=med(mt_times), mt_min=min(mt_times, default=None),
                   mt_err=mt.get("error"),
                   rr_load=rl, rr_sim=med(rr_times), rr_min=min(rr_times, default=None), rr_err=rerr, agree=agree,
                   n_mt=len(mt_times), n_rr=len(rr_times))
        print(json.dumps(row), flush=True)
        lines.append(row)

    def f(v, p=2):
        return "—" if v is None else f"{v:.{p}f}"

    md = []
    md.append("# medtwin-sbml vs libRoadRunner (PEtab benchmark models, nominal parameters)\n")
    md.append(f"Measured in one run of `benchmarks/sbml_vs_roadrunner.py` on {platform.node() or 'this machine'} "
              f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other work), "
              f"libroadrunner {roadrunner.__version__}, Python {platform.python_version()}.\n")
    md.append(f"Machine load average (1 min) {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end of the run "
              "(other engineers' builds share the machine): absolute times are noisy. Simulations are timed in "
              f"{ROUNDS} alternating rounds (medtwin {REPEAT} runs, then libRoadRunner {REPEAT} runs) so both see the same load; "
              "the table gives the median and, in brackets, the fastest run of each, and the ratios of both.\n")
    md.append("Both read the same prepared SBML (PEtab nominal parameters and the simulation condition with the most measurements applied), "
              "simulate 0 → last measurement time with 1000 output intervals at rtol 1e-6 / atol 1e-12. "
              "Load+compile: libRoadRunner `RoadRunner(path)` in a fresh process (median of 3), medtwin `load_sbml` "
              f"(median of {REPEAT}). Ratios > 1 mean medtwin is faster. "
              "\"max rel. diff\" is the largest difference between the two results over all output times, relative to "
              "the species' largest value, for the worst species.\n")
    md.append("| model | states | T | RR load+compile ms | medtwin load+compile ms | load ratio (RR/medtwin) | RR sim ms median [min] | medtwin sim ms median [min] | sim ratio (RR/medtwin) median [min] | max rel. diff | medtwin solver work per simulation |")
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in lines:
        lr = r["rr_load"] / r["mt_load"] if r["rr_load"] and r["mt_load"] else None
        sr = r["rr_sim"] / r["mt_sim"] if r["rr_sim"] and r["mt_sim"] else None
        srm = r["rr_min"] / r["mt_min"] if r["rr_min"] and r["mt_min"] else None
        note = ""
        if r["mt_err"]:
            note += f" medtwin: {r['mt_err']}"
        if r["rr_err"]:
            note += f" RoadRunner: {r['rr_err']}"
        agree = "—" if r["agree"] is None else f"{r['agree']:.1e}"
        md.append(f"| {r['model']} ({r['condition']}){note} | {r['states'] or '—'} | {r['t_end']:g} | {f(r['rr_load'])} | {f(r['mt_load'])} | "
                  f"{f(lr, 1)}× | {f(r['rr_sim'])} [{f(r['rr_min'])}] | {f(r['mt_sim'])} [{f(r['mt_min'])}] | "
                  f"{f(sr, 2)}× [{f(srm, 2)}×] | {agree} | {r['solver'] or '—'} |")
    with open(args.out, "w") as fh:
        fh.write("\n".join(md) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
