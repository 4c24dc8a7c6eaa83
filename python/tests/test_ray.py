"""medtwin.trial.run(backend="ray") on a local two-node Ray cluster on loopback: byte-identity with
the single-machine run, a worker killed mid-run (only its chunk recomputed), a killed driver
resumed from the finished chunks, and ``medtwin trial run --ray``.

The cluster is ``ray start --head`` plus one ``ray start --address`` worker node, each with one CPU
and its own custom resource; ``ray stop --force`` always runs at the end."""

import hashlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import medtwin
from conftest import cli_binary

ray = pytest.importorskip("ray", reason="ray is not installed in this environment (python/ci.sh installs it)")

SPEC = {
    "cohort": {"from": "simglucose-30", "group": "adult", "n": 22, "seed": 7},
    "scenario": {"days": 1, "random_meals_seed": 11, "sensor": {"kind": "dexcom", "noise": True}, "pump": "insulet"},
    "design": {"kind": "crossover"},
    "arm": [
        {"name": "bb", "controller": {"kind": "basal-bolus", "target_mg_dl": 140}},
        {"name": "pid", "controller": {"kind": "pid"}},
    ],
    "endpoint": [{"metric": "tir_pct"}, {"metric": "mean_mg_dl"}],
    "execution": {"chunk_patients": 4},
}

PARALLEL = dict(SPEC, design={"kind": "parallel", "seed": 3}, prognostic={"historical_n": 20, "run_in_days": 1})

# chunks of 20 patients x 2 arms x 14 days (~0.5 s each on one core): long enough to kill one
SLOW = dict(SPEC, cohort=dict(SPEC["cohort"], n=120), scenario=dict(SPEC["scenario"], days=14))


def _ray_exe() -> str:
    exe = pathlib.Path(sys.executable).parent / "ray"
    return str(exe) if exe.exists() else "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Address of a head node and one worker node on 127.0.0.1 (1 CPU each)."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [_ray_exe(), "start", "--head", f"--port={port}", "--include-dashboard=false",
             '--resources={"head_node": 1}', *common],
            check=True, capture_output=True, env=env, timeout=120,
        )
        subprocess.run(
            [_ray_exe(), "start", f"--address={addr}", '--resources={"worker_node": 1}', *common],
            check=True, capture_output=True, env=env, timeout=120,
        )
        ray.init(address=addr, logging_level="WARNING")
        try:
            deadline = time.time() + 60
            while sum(n["Alive"] for n in ray.nodes()) < 2:
                assert time.time() < deadline, "the worker node did not join"
                time.sleep(0.2)
            res = ray.cluster_resources()
            assert res.get("CPU") == 2 and res.get("head_node") == 1 and res.get("worker_node") == 1, res
        finally:
            ray.shutdown()
        yield addr
    finally:
        subprocess.run([_ray_exe(), "stop", "--force"], capture_output=True, env=env, timeout=120)


@pytest.fixture(autouse=True)
def _outside_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _digest(out: pathlib.Path) -> dict:
    """sha256 of every output file (results.parquet, summary.json, plots/*)."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def _attempts(log: pathlib.Path) -> dict:
    """chunk name -> list of (pid, finished) of its attempts, from the attempt log."""
    out: dict = {}
    for p in sorted(log.glob("*.start")):
        chunk, _host, pid, _ns = p.name[: -len(".start")].rsplit(".", 3)
        done = p.with_name(p.name[: -len(".start")] + ".done").exists()
        out.setdefault(chunk, []).append((int(pid), done))
    return out


@pytest.mark.parametrize("spec", [SPEC, PARALLEL], ids=["crossover", "parallel-procova"])
def test_ray_is_byte_identical_to_the_single_machine_run(cluster, tmp_path, spec):
    local = medtwin.trial.run(spec, tmp_path / "local", progress=False)
    seen = []
    r = medtwin.trial.run(
        spec, tmp_path / "ray", backend="ray", address=cluster, chunk_patients=5,
        progress=seen.append, attempt_log=tmp_path / "log",
    )
    assert _digest(tmp_path / "ray") == _digest(tmp_path / "local")
    assert "results.parquet" in _digest(tmp_path / "ray") and "summary.json" in _digest(tmp_path / "ray")
    assert not (tmp_path / "ray" / "ray-chunks").exists()
    assert seen[-1] == 22 and seen == sorted(seen)
    # 5 chunks (5,5,5,5,2 patients), each simulated once; the figures add up
    att = _attempts(tmp_path / "log")
    assert len(att) == 5 and all(len(v) == 1 for v in att.values()), att
    if spec is SPEC:
        assert (r.simulations, r.patient_days) == (local.simulations, local.patient_days) == (44, 44)
    else:
        # each worker process that ran a chunk fitted the prognostic model once (20 historical
        # patients x (1-day run-in + 1-day outcome)), the local run once
        fits, rest = divmod(r.patient_days - (local.patient_days - 40), 40)
        assert rest == 0 and fits >= 1, (r.patient_days, local.patient_days)
    assert r.results.num_rows == local.results.num_rows
    assert r.summary == local.summary


def test_killed_worker_recomputes_only_its_chunk(cluster, tmp_path):
    local = medtwin.trial.run(SLOW, tmp_path / "local", progress=False)
    log = tmp_path / "log"
    killed = {}

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline:
            starts = sorted(log.glob("*.start")) if log.exists() else []
            if starts:
                p = starts[0]
                chunk, _h, pid, _ns = p.name[: -len(".start")].rsplit(".", 3)
                os.kill(int(pid), signal.SIGKILL)
                killed.update(chunk=chunk, pid=int(pid))
                return
            time.sleep(0.005)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    r = medtwin.trial.run(
        SLOW, tmp_path / "ray", backend="ray", address=cluster, chunk_patients=20,
        progress=False, attempt_log=log,
    )
    t.join(5)
    assert killed, "no chunk attempt was seen to kill"
    assert _digest(tmp_path / "ray") == _digest(tmp_path / "local")
    att = _attempts(log)
    assert len(att) == 6, att
    # the killed attempt never finished; its chunk ran exactly twice, every other chunk once
    assert (killed["pid"], False) in att[killed["chunk"]], (killed, att)
    assert sorted(len(v) for v in att.values()) == [1, 1, 1, 1, 1, 2], (killed, att)
    assert len(att[killed["chunk"]]) == 2
    # finished attempts record their CPU and wall time (benchmarks/ray_trials.md's accounting)
    dones = sorted(log.glob("*.done"))
    assert len(dones) == 6
    for d in dones:
        m = json.loads(d.read_text())
        assert 0 <= m["cpu_s"] < 600 and 0 < m["wall_s"] < 600, m
    assert r.resumed_patients == 0
    assert local.summary == r.summary


def test_killed_driver_resumes_from_finished_chunks(cluster, tmp_path):
    spec_path = tmp_path / "slow.json"
    spec_path.write_text(json.dumps(SLOW))
    out = tmp_path / "ray"
    code = (
        "import json, sys, medtwin\n"
        "medtwin.trial.run(json.load(open(sys.argv[1])), sys.argv[2], backend='ray', address=sys.argv[3],\n"
        "                  chunk_patients=20, progress=False, attempt_log=sys.argv[4])\n"
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", code, str(spec_path), str(out), cluster, str(tmp_path / "log1")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    chunks = out / "ray-chunks"
    deadline = time.time() + 120
    while len(list(chunks.glob("chunk-*.parquet"))) < 2:
        assert driver.poll() is None, driver.communicate()[0].decode(errors="replace")[-2000:]
        assert time.time() < deadline, "no chunk was finished"
        time.sleep(0.01)
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    finished = sorted(p.name[: -len(".parquet")] for p in chunks.glob("chunk-*.parquet"))
    assert 2 <= len(finished) < 6, finished
    assert not (out / "results.parquet").exists()
    # without resume the leftover chunks are refused, never overwritten
    with pytest.raises(medtwin.InputError, match="resume"):
        medtwin.trial.run(SLOW, out, backend="ray", address=cluster, progress=False)
    r = medtwin.trial.run(
        SLOW, out, backend="ray", address=cluster, resume=True, progress=False, attempt_log=tmp_path / "log2"
    )
    again = _attempts(tmp_path / "log2")
    assert not set(again) & set(finished), (finished, again)
    assert sorted(set(again) | set(finished)) == sorted(set(_attempts(tmp_path / "log1")) | set(again))
    assert len(set(again) | set(finished)) == 6
    assert r.resumed_patients == 20 * len(finished)
    local = medtwin.trial.run(SLOW, tmp_path / "local", progress=False)
    assert _digest(out) == _digest(tmp_path / "local")


def test_resume_errors_need_no_cluster(tmp_path):
    with pytest.raises(medtwin.InputError, match="nothing to resume"):
        medtwin.trial.run(SPEC, tmp_path / "x", backend="ray", resume=True, progress=False)
    with pytest.raises(ValueError, match="backend"):
        medtwin.trial.run(SPEC, tmp_path / "x", backend="spark", progress=False)
    with pytest.raises(TypeError, match="backend='ray'"):
        medtwin.trial.run(SPEC, tmp_path / "x", chunk_patients=3, progress=False)


def test_cli_ray_flag(cluster, tmp_path):
    cli = cli_binary()
    if cli is None:
        pytest.skip("the medtwin CLI is not built (cargo build -p medtwin)")
    helptext = subprocess.run([str(cli), "trial", "run", "--help"], capture_output=True, text=True).stdout
    if "--ray" not in helptext:
        pytest.skip(f"{cli} predates `trial run --ray` (rebuild it: cargo build -p medtwin)")
    from test_trial import SPEC_TOML

    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC_TOML)
    env = dict(os.environ, MEDTWIN_PYTHON=sys.executable)
    p = subprocess.run(
        [str(cli), "trial", "run", str(spec), "--out", str(tmp_path / "cli"), "--ray", cluster, "--chunk-patients", "5"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "patient-days" in p.stdout and "tir_pct" in p.stdout
    medtwin.trial.run(spec, tmp_path / "local", progress=False)
    assert _digest(tmp_path / "cli") == _digest(tmp_path / "local")
    # no usable interpreter: a clear message, exit code 1, nothing written
    env["MEDTWIN_PYTHON"] = str(tmp_path / "no-such-python")
    p = subprocess.run(
        [str(cli), "trial", "run", str(spec), "--out", str(tmp_path / "none"), "--ray", cluster],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert p.returncode == 1 and "MEDTWIN_PYTHON" in p.stderr, p.stderr
    assert not (tmp_path / "none").exists()
