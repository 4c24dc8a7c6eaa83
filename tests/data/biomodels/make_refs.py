#!/usr/bin/env python3
"""Tight-tolerance libRoadRunner references for the BioModels in this folder.

Writes REF_<model>.csv (time, then every species of the model in document order, in the
units of its MathML symbol: concentration unless hasOnlySubstanceUnits or a 0-D compartment,
as medtwin's `sbml simulate` reports them by default) and prints the settings used.

    pip install libroadrunner && python3 make_refs.py
"""
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import roadrunner

HERE = Path(__file__).resolve().parent
RTOL, ATOL = 1e-10, 1e-16
POINTS = 101  # 100 output intervals
# End time per model (model time units), chosen to cover its dynamics:
MODELS = {
    "BIOMD0000000001": 1.0,  # s: receptor states relax well within 1 s
    "BIOMD0000000009": 200.0,  # MAPK cascade settles by ~100 (model time)
    "BIOMD0000000183": 1.0,  # s: calmodulin binding settles within 1 s
    "BIOMD0000000335": 1200.0,  # s: 20 min of thrombin generation
    "BIOMD0000000040": 300.0,  # s: about six Oregonator cycles (period ~48.7 s)
    "BIOMD0000000711": 20.0,  # d: past the V < 0 event near 11.5 d (CVODE fails near 24 d)
    "BIOMD0000000628": 600.0,  # s: first stimulus at 300 s
    "BIOMD0000000714": 1000.0,  # h: outcome time of the inflammation model
}


# Pulse-paced cardiac cell models (repaired copies, see PROVENANCE.md): V_membrane, 0..2500 ms,
# 251 points, CVODE with a 0.1 ms maximum step (the stimulus pulses last 1-2 ms).
CARDIAC = ["MODEL0479527919_connected", "MODEL0393108880_connected"]


# The unrepaired Luo-Rudy 1991 conversion leaves 15 parameters without a value (libRoadRunner
# and medtwin refuse it); the reference gives them values as `medtwin sbml simulate --set`
# does: every gate voltage copy V_*_gate the resting voltage -84.5 mV, every time_*_gate 0.
# The gates then stay at their resting voltage (no action potential in either tool).
UNSET = "MODEL0479527919"
UNSET_V = -84.5


def unset_values(text):
    """{id: value} for the parameters of the unrepaired file that have no value."""
    ruled = set(re.findall(r'(?:variable|symbol)="([^"]+)"', text))
    out = {}
    for tag in re.findall(r"<parameter [^>]*>", text):
        pid = re.search(r' id="([^"]+)"', tag).group(1)
        if " value=" not in tag and pid not in ruled:
            out[pid] = 0.0 if pid.startswith("time_") else UNSET_V
    return out


def unset(name):
    text = (HERE / f"{name}.xml").read_text()
    values = unset_values(text)

    def give(m):
        tag = m.group(0)
        pid = re.search(r' id="([^"]+)"', tag).group(1)
        if pid not in values:
            return tag
        return tag.replace("<parameter ", f'<parameter value="{values[pid]!r}" ', 1)

    text = re.sub(r"<parameter [^>]*>", give, text)
    r = roadrunner.RoadRunner(text)
    r.integrator.relative_tolerance = RTOL
    r.integrator.absolute_tolerance = ATOL
    r.integrator.maximum_time_step = 0.1
    r.integrator.maximum_num_steps = 1_000_000
    a = np.array(r.simulate(0.0, 1200.0, 1201, ["time", "V_membrane"]))
    with open(HERE / f"REF_{name}_set.csv", "w") as f:
        f.write("time,V_membrane\n")
        for row in a:
            f.write(",".join(f"{v:.12g}" for v in row) + "\n")
    print(f"{name} with {len(values)} unset values given: 0..1200 ms every 1 ms, maximum step 0.1 ms")


def species_columns(path):
    """(id, selection) per species in document order."""
    root = ET.parse(path).getroot()
    ns = {"s": root.tag.split("}")[0].strip("{")}
    dims = {}
    for c in root.iterfind(".//s:listOfCompartments/s:compartment", ns):
        dims[c.get("id")] = c.get("spatialDimensions", "3")
    out = []
    for s in root.iterfind(".//s:listOfSpecies/s:species", ns):
        sid = s.get("id")
        amount = s.get("hasOnlySubstanceUnits", "false") == "true" or dims.get(
            s.get("compartment")
        ) in ("0", "0.0")
        out.append((sid, sid if amount else f"[{sid}]"))
    return out


def cardiac(name):
    r = roadrunner.RoadRunner(str(HERE / f"{name}.xml"))
    r.integrator.relative_tolerance = RTOL
    r.integrator.absolute_tolerance = ATOL
    r.integrator.maximum_time_step = 0.1
    r.integrator.maximum_num_steps = 1_000_000
    a = np.array(r.simulate(0.0, 2500.0, 251, ["time", "V_membrane"]))
    with open(HERE / f"REF_{name}.csv", "w") as f:
        f.write("time,V_membrane\n")
        for row in a:
            f.write(",".join(f"{v:.12g}" for v in row) + "\n")
    print(f"{name}: 0..2500 ms, maximum step 0.1 ms")


def main(names):
    print(f"libroadrunner {roadrunner.__version__}, CVODE rtol {RTOL}, atol {ATOL}, {POINTS} points")
    for name in names or list(MODELS) + CARDIAC + [UNSET]:
        if name == UNSET:
            unset(name)
            continue
        if name in CARDIAC:
            cardiac(name)
            continue
        end = MODELS[name]
        xml = HERE / f"{name}.xml"
        r = roadrunner.RoadRunner(str(xml))
        r.integrator.relative_tolerance = RTOL
        r.integrator.absolute_tolerance = ATOL
        r.integrator.maximum_num_steps = 1_000_000
        cols = species_columns(xml)
        r.timeCourseSelections = ["time"] + [sel for _, sel in cols]
        a = np.array(r.simulate(0.0, end, POINTS))
        with open(HERE / f"REF_{name}.csv", "w") as f:
            f.write(",".join(["time"] + [sid for sid, _ in cols]) + "\n")
            for row in a:
                f.write(",".join(f"{v:.12g}" for v in row) + "\n")
        print(f"{name}: 0..{end}, {len(cols)} species")


if __name__ == "__main__":
    main(sys.argv[1:])
