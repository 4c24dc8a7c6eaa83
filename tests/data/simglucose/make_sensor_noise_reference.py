#!/usr/bin/env python3
"""Generate ``sensor_noise_reference.json`` from simglucose 0.2.11's own CGM noise generator.

The Rust CGM noise (``crates/models/t1d/src/sensor.rs``, ``CgmNoise``) draws its N(0,1) numbers from
ChaCha8 instead of numpy's MT19937, so it cannot replay simglucose's stream for a given seed. It must
produce the *same stochastic process*. This script records

1. ``stats``: summary statistics of simglucose's noise for every sensor in ``sensor_params.csv``,
   pooled over ``N_SEEDS`` seeds x ``DAYS`` days, with a Monte-Carlo standard error for each
   statistic (batch means over ``N_BATCHES`` groups of consecutive seeds). The Rust test
   ``crates/models/t1d/tests/sensor_noise.rs`` computes the same statistics with the same
   definitions on its own draws and compares.
2. ``replay``: for a few (sensor, seed) pairs, the N(0,1) draws numpy makes and the noise values
   simglucose returns. The Rust test feeds those draws to ``CgmNoise::from_normals`` and must
   reproduce the values to rounding error; this checks the block / grid / spline logic exactly.

Statistic definitions (x = noise in mg/dL on the sensor grid; a seed's series is x[s, 0..n)):
    mean, sd (ddof = 0), skewness = m3 / m2^1.5 (population moments), all pooled over seeds;
    quantiles: numpy.quantile(..., method="linear") of the pooled values;
    acf_k = sum_s sum_{t<n-k} (x[s,t]-m)(x[s,t+k]-m) / sum_s sum_t (x[s,t]-m)^2, m = pooled mean,
            lags never cross seeds; k in sensor samples (k = 1 and 5);
    diff_acf1 = acf_1 of d[s,t] = x[s,t+1] - x[s,t].
    se(stat) = std(stat over the N_BATCHES batches, ddof = 1) / sqrt(N_BATCHES).

Usage (Python 3.11):
    python3.11 -m venv /tmp/sgvenv
    /tmp/sgvenv/bin/pip install 'setuptools<70' simglucose==0.2.11
    MPLBACKEND=Agg /tmp/sgvenv/bin/python tests/data/simglucose/make_sensor_noise_reference.py
"""

import hashlib
import importlib.metadata
import json
import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")  # noise_gen.py imports matplotlib.pyplot

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy  # noqa: E402
import simglucose  # noqa: E402
from simglucose.sensor.noise_gen import CGMNoise  # noqa: E402

N_SEEDS = 200
FIRST_SEED = 1
DAYS = 2
N_BATCHES = 20
QUANTILES = [0.01, 0.05, 0.25, 0.50, 0.75, 0.95, 0.99]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sensor_noise_reference.json")

# (name in the output, sensor_params row or custom params, seed, number of noise values)
# Each replay crosses at least one 150-min block boundary.
REPLAYS = [
    ("Dexcom", None, 42, 60),
    ("GuardianRT", None, 7, 35),
    ("Navigator", None, 2024, 155),
    # sample time 7 min does not divide 150: each block yields floor(150/7) = 21 values covering
    # 147 min, and the next block restarts at its own 15-min knot 0 (simglucose's behaviour).
    ("custom_sample_time_7", {"PACF": 0.7, "gamma": -0.5444, "lambda": 15.9574, "delta": 1.6898,
                              "xi": -5.47, "sample_time": 7.0, "min": 39.0, "max": 600.0}, 3, 45),
]


def sensor_params():
    path = os.path.join(os.path.dirname(simglucose.__file__), "params", "sensor_params.csv")
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return pd.read_csv(path), path, sha


def draw(params, seed, n):
    gen = CGMNoise(params, seed=seed)
    return np.array([next(gen) for _ in range(n)], dtype=float), gen


def acf(x, k, m):
    """x: (seeds, n). Pooled autocorrelation at lag k (lags never cross seeds)."""
    c = x - m
    num = np.sum(c[:, :-k] * c[:, k:])
    den = np.sum(c * c)
    return float(num / den)


def statistics(x):
    flat = x.ravel()
    m = float(flat.mean())
    c = flat - m
    m2 = float(np.mean(c ** 2))
    m3 = float(np.mean(c ** 3))
    d = np.diff(x, axis=1)
    out = {
        "mean": m,
        "sd": m2 ** 0.5,
        "skewness": m3 / m2 ** 1.5,
    }
    for q, v in zip(QUANTILES, np.quantile(flat, QUANTILES, method="linear")):
        out["q%02d" % round(q * 100)] = float(v)
    out["acf1"] = acf(x, 1, m)
    out["acf5"] = acf(x, 5, m)
    out["diff_acf1"] = acf(d, 1, float(d.mean()))
    return out


def main():
    table, path, sha = sensor_params()
    result = {
        "generator": "tests/data/simglucose/make_sensor_noise_reference.py",
        "versions": {
            "simglucose": importlib.metadata.version("simglucose"),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "python": sys.version.split()[0],
        },
        "sensor_params_sha256": sha,
        "design": {
            "n_seeds": N_SEEDS,
            "first_seed": FIRST_SEED,
            "days": DAYS,
            "n_batches": N_BATCHES,
            "quantiles": QUANTILES,
            "note": "noise values per seed = DAYS*1440/sample_time; seeds FIRST_SEED.. "
                    "FIRST_SEED+N_SEEDS-1 of np.random.RandomState via CGMNoise(params, seed)",
        },
        "stats": {},
        "replay": {},
    }

    for _, row in table.iterrows():
        name = row["Name"]
        n = int(round(DAYS * 1440 / row["sample_time"]))
        x = np.empty((N_SEEDS, n))
        for i in range(N_SEEDS):
            x[i], _ = draw(row, FIRST_SEED + i, n)
        full = statistics(x)
        per = N_SEEDS // N_BATCHES
        batches = [statistics(x[b * per:(b + 1) * per]) for b in range(N_BATCHES)]
        entry = {"sample_time": float(row["sample_time"]), "n_per_seed": n, "stats": {}}
        for key, value in full.items():
            se = float(np.std([b[key] for b in batches], ddof=1) / np.sqrt(N_BATCHES))
            entry["stats"][key] = {"value": float("%.9g" % value), "se": float("%.3g" % se)}
        result["stats"][name] = entry
        print(name, {k: v["value"] for k, v in entry["stats"].items()}, file=sys.stderr)

    for name, custom, seed, n in REPLAYS:
        params = pd.Series(custom) if custom is not None else \
            table.loc[table.Name == name].squeeze()
        noise, gen = draw(params, seed, n)
        n_normals = gen._noise15_gen.count  # randn() calls made by noise15_iter
        rs = np.random.RandomState(seed)
        normals = [float(rs.randn()) for _ in range(n_normals)]
        entry = {"seed": seed, "normals": normals, "noise": [float(v) for v in noise]}
        if custom is not None:
            entry["params"] = custom
        result["replay"][name] = entry

    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print("wrote", OUT, os.path.getsize(OUT), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
