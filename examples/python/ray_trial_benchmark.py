"""Throughput of medtwin.trial.run on Ray vs one process, on the same specification.

    python examples/python/ray_trial_benchmark.py --address 127.0.0.1:6379 --n 1000 --days 20

Runs the single-process backend (all cores, rayon) and the Ray backend (one task per chunk of
``--chunk-patients`` patients, one CPU and one thread each) on a crossover trial of N patients x
2 arms x DAYS days, checks that the output files are byte-identical (sha256) and prints
patient-days per second. Used for benchmarks/ray_trials.md.
"""

import argparse
import hashlib
import pathlib
import tempfile
import time

import medtwin


def digest(out: pathlib.Path) -> dict:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", default="auto")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--chunk-patients", type=int, nargs="+", default=[50])
    ap.add_argument("--skip-local", action="store_true")
    a = ap.parse_args()
    spec = {
        "cohort": {"from": "simglucose-30", "group": "adult", "n": a.n, "seed": 7},
        "scenario": {"days": a.days, "random_meals_seed": 11, "sensor": {"kind": "dexcom", "noise": True},
                     "pump": "insulet"},
        "design": {"kind": "crossover"},
        "arm": [{"name": "bb", "controller": {"kind": "basal-bolus", "target_mg_dl": 140}},
                {"name": "pid", "controller": {"kind": "pid"}}],
        "endpoint": [{"metric": "tir_pct"}, {"metric": "mean_mg_dl"}],
        "execution": {"chunk_patients": 64},
    }
    pd = a.n * 2 * a.days
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        if not a.skip_local:
            t = time.perf_counter()
            r = medtwin.trial.run(spec, d / "local", progress=False)
            wall = time.perf_counter() - t
            print(f"local (one process, all cores): {r.patient_days} patient-days in {wall:.2f} s = "
                  f"{r.patient_days / wall:.0f} patient-days/s (runner's own figure {r.patient_days_per_s:.0f})")
        for cp in a.chunk_patients:
            import ray
            t = time.perf_counter()
            ray.init(address=a.address, logging_level="WARNING", log_to_driver=False)
            cpus = ray.cluster_resources().get("CPU")
            nodes = sum(n["Alive"] for n in ray.nodes())
            r = medtwin.trial.run(spec, d / f"ray{cp}", backend="ray", chunk_patients=cp, progress=False)
            ray.shutdown()
            wall = time.perf_counter() - t
            same = (not a.skip_local) and digest(d / f"ray{cp}") == digest(d / "local")
            print(f"ray ({nodes} nodes, {cpus:.0f} CPUs, chunk_patients={cp}, {-(-a.n // cp)} tasks): "
                  f"{pd} patient-days in {wall:.2f} s incl. ray.init = {pd / wall:.0f} patient-days/s; "
                  f"simulation phase {r.wall_s:.2f} s = {pd / r.wall_s:.0f} patient-days/s; "
                  f"byte-identical to local: {same}")


if __name__ == "__main__":
    main()
