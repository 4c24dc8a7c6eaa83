"""A large in-silico trial on an existing Ray cluster, with CPU accounting (benchmarks/ray_trials.md).

    python examples/python/ray_10m.py --address 127.0.0.1:6411 --n 50000 --days 100 \\
        --chunk-patients 1000 --out /tmp/t10m --kill-after-chunks 10

Runs ``medtwin.trial.run(spec, out, backend="ray")`` on the crossover specification of
``ray_trial_benchmark.py`` (generated adults, seed 7; basal-bolus vs PID; N patients x 2 arms x
DAYS days = 2·N·DAYS patient-days) and records:

* wall time of the run (``ray.init`` excluded, the final assembly and analysis included);
* CPU time of the chunks: the sum of ``cpu_s`` (process CPU of the worker, user + system, all
  threads, during the chunk's simulation) over every attempt's ``.done`` marker in the attempt log,
  and the end-of-run CPU time (``/proc/PID/stat`` utime + stime) of every worker process still
  alive (these include Ray's own per-worker overhead and the idle time between tasks);
* which chunks ran how often (``--kill-after-chunks K``: after K finished chunks, SIGKILL the
  worker of one running attempt that has been running for at least 5 s, as
  ``python/tests/test_ray.py`` does; the chunk must then run exactly twice, every other chunk once);
* a copy of every chunk's Parquet file as the driver writes it (``--keep-chunks DIR``), to
  compare with single-process re-runs of the same patient ranges (``--verify``).

``--verify DIR --samples K [--chunks NAME …]`` (no Ray needed): re-simulates K random chunks'
patient ranges (and the named ones) in this process (``medtwin._native.trial_chunk``, one thread)
and compares the bytes with the kept chunk files, and the rows with those of
``OUT/results.parquet`` when the run finished.

Prints one JSON object (also written to ``OUT.json``).
"""

import argparse
import glob
import json
import os
import random
import resource
import shutil
import signal
import sys
import threading
import time

import medtwin
from medtwin import _native


def spec(n: int, days: int) -> dict:
    return {
        "cohort": {"from": "simglucose-30", "group": "adult", "n": n, "seed": 7},
        "scenario": {"days": days, "random_meals_seed": 11, "sensor": {"kind": "dexcom", "noise": True},
                     "pump": "insulet"},
        "design": {"kind": "crossover"},
        "arm": [{"name": "bb", "controller": {"kind": "basal-bolus", "target_mg_dl": 140}},
                {"name": "pid", "controller": {"kind": "pid"}}],
        "endpoint": [{"metric": "tir_pct"}, {"metric": "mean_mg_dl"}],
        "execution": {"chunk_patients": 64},
    }


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process, s (raises OSError when it is gone)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def attempts(log: str) -> dict:
    """chunk name -> list of (pid, done, cpu_s, wall_s)."""
    out: dict = {}
    for p in glob.glob(os.path.join(log, "*.start")):
        base = p[: -len(".start")]
        chunk, _host, pid, _ns = os.path.basename(base).rsplit(".", 3)
        done = os.path.exists(base + ".done")
        cpu = wall = None
        if done:
            with open(base + ".done") as f:
                d = json.load(f)
            cpu, wall = d["cpu_s"], d["wall_s"]
        out.setdefault(chunk, []).append((int(pid), done, cpu, wall))
    return out


def run(a: argparse.Namespace) -> dict:
    import ray

    log = a.out + ".attempts"
    keep = a.keep_chunks
    for d in (a.out, log) + ((keep,) if keep else ()):
        shutil.rmtree(d, ignore_errors=True)
    if keep:
        os.makedirs(keep)
    os.chdir("/")  # no source checkout's medtwin/ on the workers' sys.path
    ray.init(address=a.address, logging_level="WARNING", log_to_driver=False)
    s = spec(a.n, a.days)
    n_chunks = -(-a.n // a.chunk_patients)
    t0 = time.perf_counter()
    state = {"chunks": 0, "killed": None}
    cdir = os.path.join(a.out, "ray-chunks")

    def progress(done: int) -> None:
        state["chunks"] += 1
        if keep:
            for f in glob.glob(os.path.join(cdir, "chunk-*.parquet")):
                dst = os.path.join(keep, os.path.basename(f))
                if not os.path.exists(dst):
                    shutil.copyfile(f, dst)
        print(f"{time.strftime('%H:%M:%S', time.gmtime())} {done}/{a.n} patients, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)

    def killer() -> None:
        while state["chunks"] < a.kill_after_chunks:
            time.sleep(1)
        while True:
            now = time.time_ns()
            for p in sorted(glob.glob(os.path.join(log, "*.start"))):
                base = p[: -len(".start")]
                chunk, _h, pid, ns = os.path.basename(base).rsplit(".", 3)
                if not os.path.exists(base + ".done") and now - int(ns) > 5e9:
                    os.kill(int(pid), signal.SIGKILL)
                    state["killed"] = {"chunk": chunk, "pid": int(pid), "after_s": round(time.perf_counter() - t0, 1),
                                       "attempt_ran_s": round((now - int(ns)) / 1e9, 1)}
                    print(f"killed worker {pid} running {chunk}", flush=True)
                    return
            time.sleep(0.5)

    if a.kill_after_chunks:
        threading.Thread(target=killer, daemon=True).start()
    r = medtwin.trial.run(s, a.out, backend="ray", chunk_patients=a.chunk_patients, progress=progress,
                          attempt_log=log, max_retries=3)
    wall = time.perf_counter() - t0
    att = attempts(log)
    pids = sorted({pid for v in att.values() for pid, *_ in v})
    alive = {}
    for pid in pids:
        try:
            alive[pid] = proc_cpu_s(pid)
        except OSError:
            pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    ray.shutdown()
    task_cpu = sum(c for v in att.values() for _p, done, c, _w in v if done)
    task_wall = sum(w for v in att.values() for _p, done, _c, w in v if done)
    runs = sorted(len(v) for v in att.values())
    return {
        "n": a.n, "days": a.days, "chunk_patients": a.chunk_patients, "chunks": n_chunks,
        "patient_days": r.patient_days, "wall_s": round(wall, 2),
        "patient_days_per_s_wall": round(r.patient_days / wall, 1),
        "task_cpu_s_finished_attempts": round(task_cpu, 2),
        "task_wall_s_finished_attempts": round(task_wall, 2),
        "us_cpu_per_patient_day_tasks": round(task_cpu / r.patient_days * 1e6, 1),
        "worker_pids": pids, "worker_cpu_s_alive_at_end": {str(k): round(v, 2) for k, v in alive.items()},
        "driver_cpu_s": round(ru.ru_utime + ru.ru_stime, 2), "driver_maxrss_mb": round(ru.ru_maxrss / 1024, 1),
        "attempts_per_chunk": {"min": runs[0], "max": runs[-1], "chunks_run_twice": [k for k, v in att.items() if len(v) > 1],
                               "n_chunks_seen": len(att)},
        "killed": state["killed"], "results": r.results_path,
    }


def verify(a: argparse.Namespace) -> dict:
    import pyarrow.parquet as pq

    s = spec(a.n, a.days)
    info = _native.trial_info(json.dumps(s), "json", "<dict>", "/")
    files = sorted(glob.glob(os.path.join(a.verify, "chunk-*.parquet")))
    rng = random.Random(a.seed)
    picks = sorted(rng.sample(files, min(a.samples, len(files))))
    picks += [os.path.join(a.verify, c) for c in a.chunks if os.path.join(a.verify, c) not in picks]
    res_path = os.path.join(a.out, "results.parquet")
    full = pq.read_table(res_path) if os.path.exists(res_path) else None  # absent when the run was stopped
    out = []
    for f in picks:
        start, end = _native.trial_chunk_range(f)
        t, c = time.perf_counter(), time.process_time()
        data, _stats = _native.trial_chunk(info["toml"], "toml", "<dict>", "/", start, end, 1)
        cpu, wall = time.process_time() - c, time.perf_counter() - t
        with open(f, "rb") as fh:
            ray_bytes = fh.read()
        mine = pq.read_table(__import__("pyarrow").BufferReader(bytes(data)))
        # rows of those patients in the assembled results: the chunk's rows are contiguous
        # (patient order, arms within a patient), as the single-machine run writes them
        k = mine.num_rows
        lo = start * k // (end - start)
        rows_equal = None if full is None else full.slice(lo, k).equals(mine)
        out.append({"chunk": os.path.basename(f), "patients": [start, end], "bytes_identical": bytes(data) == ray_bytes,
                    "rows_equal_to_results_parquet": rows_equal, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2)})
    return {"verify": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", default="auto")
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--days", type=int, default=100)
    ap.add_argument("--chunk-patients", type=int, default=1000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--keep-chunks", default=None)
    ap.add_argument("--kill-after-chunks", type=int, default=0)
    ap.add_argument("--verify", default=None, help="directory of kept chunks to re-simulate and compare")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chunks", nargs="*", default=[], help="chunk file names to verify besides the random sample")
    a = ap.parse_args()
    a.out = os.path.abspath(a.out)
    res = verify(a) if a.verify else run(a)
    text = json.dumps(res, indent=1)
    print(text)
    with open(a.out + (".verify.json" if a.verify else ".json"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
