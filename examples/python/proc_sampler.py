"""Sample the CPU time and memory of a Ray cluster's processes, and the load, into JSON lines.

    python examples/python/proc_sampler.py --every 15 --out /tmp/t10m.samples.jsonl &

Every ``--every`` seconds: for every process whose command line mentions ray (raylet, GCS, workers
``ray::…``, the driver) its utime + stime (s), RSS and peak RSS (VmHWM, MB); and the load average
(``/proc/loadavg``). Used for benchmarks/ray_trials.md (10 M patient-days): the last sample of a
worker killed mid-run is its CPU time up to at most ``--every`` s before it died.
"""

import argparse
import json
import os
import time


def sample() -> dict:
    tck = os.sysconf("SC_CLK_TCK")
    procs = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            if "ray" not in cmd or "proc_sampler" in cmd:
                continue
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            mem = {}
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        mem[line.split(":")[0]] = int(line.split()[1]) / 1024
        except OSError:
            continue
        procs[pid] = {"cmd": cmd[:80], "cpu_s": (int(st[11]) + int(st[12])) / tck,
                      "rss_mb": round(mem.get("VmRSS", 0), 1), "hwm_mb": round(mem.get("VmHWM", 0), 1)}
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"t": time.time(), "utc": time.strftime("%H:%M:%S", time.gmtime()), "load": load,
            "rss_total_mb": round(sum(p["rss_mb"] for p in procs.values()), 1), "procs": procs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=float, default=15)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    while True:
        with open(a.out, "a") as f:
            f.write(json.dumps(sample()) + "\n")
        time.sleep(a.every)


if __name__ == "__main__":
    main()
