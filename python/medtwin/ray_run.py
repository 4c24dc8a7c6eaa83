"""Distributed trials on Ray: ``medtwin.trial.run(spec, out_dir, backend="ray")``.

The cohort is split by patient index into chunks ``[0, c), [c, 2c), …`` (``chunk_patients``
patients each). Every chunk is one Ray task that calls the compiled extension to simulate exactly
those patients (``_native.trial_chunk``: the same per-patient random streams as a single-machine
run, which depend on the seeds and the cohort index only) and returns its rows as an in-memory
Parquet file. The driver writes each finished chunk to ``OUT/ray-chunks/`` as it arrives, then
assembles ``OUT/results.parquet`` row group by row group (``_native.trial_assemble``) and
analyses it: ``results.parquet``, ``summary.json`` and ``plots/`` are byte-identical to
``medtwin.trial.run(spec, out_dir)`` and ``medtwin trial run``. ``ray-chunks/`` is removed at
the end.

Failures:

* a worker process or node dies: Ray re-runs that chunk's task (``max_retries``); the other
  chunks are not recomputed;
* the driver dies or is interrupted (Ctrl-C): the chunks already written stay in
  ``OUT/ray-chunks/`` with its ``manifest.json`` (specification fingerprint, cohort size,
  chunking); ``resume=True`` (CLI ``--resume``) simulates only the missing chunks.

Workers need the ``medtwin`` package (same version) importable and, for a cohort read from a
file, that file at the same path. Command line (what ``medtwin trial run --ray ADDRESS`` runs)::

    python -m medtwin.ray_run SPEC.toml --out DIR --address auto [--resume] [--chunk-patients N]
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from . import _native
from .trial import SpecLike, TrialResult, _spec_source, _tqdm_progress

__all__ = ["run_ray", "CHUNK_DIR", "main"]

#: Directory (inside the output directory) holding finished chunks and ``manifest.json``.
CHUNK_DIR = "ray-chunks"
_MANIFEST = "manifest.json"


def _chunk_name(start: int, end: int) -> str:
    return f"chunk-{start:010d}-{end:010d}.parquet"


def _write_atomic(path: str, data: Union[bytes, str]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _chunk_task(
    toml_text: str, source: str, base: str, start: int, end: int, threads: int, attempt_log: Optional[str]
) -> Tuple[bytes, Dict[str, Any]]:
    """One Ray task: simulate patients ``start..end`` (runs on a worker)."""
    marker = None
    if attempt_log:
        os.makedirs(attempt_log, exist_ok=True)
        marker = os.path.join(
            attempt_log, f"chunk-{start:010d}-{end:010d}.{socket.gethostname()}.{os.getpid()}.{time.time_ns()}"
        )
        _write_atomic(marker + ".start", json.dumps({"start": start, "end": end, "pid": os.getpid()}))
    t0, c0 = time.perf_counter(), time.process_time()
    data, stats = _native.trial_chunk(toml_text, "toml", source, base, start, end, threads)
    if marker:
        # process CPU (all threads of this worker, user + system) and wall time of the chunk, s
        _write_atomic(
            marker + ".done",
            json.dumps({"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0}),
        )
    stats["pid"] = os.getpid()
    stats["host"] = socket.gethostname()
    return bytes(data), stats


def _ray_init(ray: Any, address: Optional[str]) -> None:
    """``ray.init`` that keeps a source checkout's ``medtwin/`` (no compiled extension) in the
    current directory from shadowing the installed package on the workers: Ray puts the driver's
    current directory first on the workers' ``sys.path``."""
    cwd = os.getcwd()
    pkg = os.path.dirname(os.path.realpath(__file__))
    here = os.path.join(cwd, "medtwin")
    shadow = os.path.isdir(here) and os.path.realpath(here) != pkg
    if shadow:
        os.chdir(os.path.dirname(pkg))
    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    finally:
        if shadow:
            os.chdir(cwd)


def _input_error(msg: str) -> Exception:
    from . import InputError

    return InputError(msg)


def run_ray(
    spec: SpecLike,
    out_dir: Union[str, "os.PathLike[str]"],
    *,
    address: Optional[str] = None,
    chunk_patients: Optional[int] = None,
    resume: bool = False,
    progress: Union[bool, Callable[[int], None]] = True,
    cpus_per_task: int = 1,
    max_retries: int = 3,
    max_in_flight: Optional[int] = None,
    attempt_log: Optional[Union[str, "os.PathLike[str]"]] = None,
) -> TrialResult:
    """Run a trial on a Ray cluster (see the module docstring); the arguments are those of
    :func:`medtwin.trial.run` with ``backend="ray"``.

    ``address``: ``None`` (``RAY_ADDRESS``, else the cluster last started on this machine, else a
    new local Ray), ``"auto"`` (an existing cluster, else ``ConnectionError``), ``"local"`` (a new
    local Ray) or ``"HOST:PORT"``. When Ray is already initialised in this process it is used as
    is and left running. ``chunk_patients``: patients per task (default: the specification's
    ``execution.chunk_patients``); any value gives the same bytes. ``cpus_per_task``: Ray CPUs a
    task reserves, and the threads it simulates on. ``max_retries``: re-runs of a chunk whose
    worker died. ``max_in_flight``: tasks submitted at once (default: twice the cluster's CPUs
    divided by ``cpus_per_task``). ``attempt_log``: a directory where every task attempt writes
    ``chunk-START-END.HOST.PID.NS.start`` (JSON: range, pid) and ``….done`` (JSON: ``cpu_s``,
    the worker process's CPU time (user + system, all threads) for the chunk's simulation, and
    ``wall_s``, both in seconds) — an audit of which chunk ran where, how often and at what cost.

    Raises :class:`medtwin.InputError` (resume mismatch, leftover chunks without ``resume``),
    :class:`medtwin.ScenarioError`, :class:`medtwin.SimulationError` (as a Ray task error),
    ``ImportError`` (ray not installed), ``KeyboardInterrupt`` (finished chunks kept).
    """
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backend='ray' needs the ray package (pip install ray) in this interpreter and on the workers"
        ) from e
    if cpus_per_task < 1:
        raise ValueError("cpus_per_task must be >= 1")
    if chunk_patients is not None and int(chunk_patients) < 1:
        raise ValueError("chunk_patients must be >= 1")
    text, fmt, source, base = _spec_source(spec)
    info = _native.trial_info(text, fmt, source, base)
    toml_text: str = info["toml"]
    n: int = info["n_patients"]
    out = os.path.abspath(os.fspath(out_dir))
    cdir = os.path.join(out, CHUNK_DIR)
    mpath = os.path.join(cdir, _MANIFEST)
    manifest = {"fingerprint": info["fingerprint"], "n_patients": n}
    if os.path.exists(mpath):
        if not resume:
            raise _input_error(
                f"{cdir} holds an interrupted Ray run: complete it with resume=True (CLI --resume), "
                "or remove it to start afresh"
            )
        with open(mpath, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("fingerprint") != manifest["fingerprint"] or old.get("n_patients") != n:
            raise _input_error(
                f"{mpath} was written for another trial specification; remove {cdir} or run the original specification"
            )
        if chunk_patients is not None and int(chunk_patients) != old.get("chunk_patients"):
            raise _input_error(
                f"{mpath}: the interrupted run used chunk_patients = {old.get('chunk_patients')}, "
                f"not {chunk_patients}; resume with the same chunking"
            )
        cp = int(old["chunk_patients"])
    else:
        if resume:
            raise _input_error(f"{mpath} does not exist: nothing to resume")
        cp = int(chunk_patients) if chunk_patients is not None else int(info["chunk_patients"])
        os.makedirs(cdir, exist_ok=True)
        _write_atomic(mpath, json.dumps(dict(manifest, chunk_patients=cp), indent=1))
    ranges = [(s, min(s + cp, n)) for s in range(0, n, cp)]
    files = [os.path.join(cdir, _chunk_name(a, b)) for a, b in ranges]
    todo: List[int] = []
    resumed = 0
    for j, ((a, b), f) in enumerate(zip(ranges, files)):
        if os.path.exists(f) and tuple(_native.trial_chunk_range(f)) == (a, b):
            resumed += b - a
        else:
            todo.append(j)

    close: Callable[[], None] = lambda: None
    cb: Optional[Callable[[int], None]]
    if progress is True:
        cb, close = _tqdm_progress(n)
    elif progress is False:
        cb = None
    else:
        cb = progress
    log = os.path.abspath(os.fspath(attempt_log)) if attempt_log is not None else None
    owns = False
    sims = days = 0
    t0 = time.perf_counter()
    try:
        if not ray.is_initialized():
            _ray_init(ray, address)
            owns = True
        if cb is not None:
            cb(resumed)
        task = ray.remote(_chunk_task).options(num_cpus=cpus_per_task, max_retries=max_retries)
        if max_in_flight is None:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            max_in_flight = max(2, 2 * cpus // cpus_per_task)
        pending: Dict[Any, int] = {}
        queue = list(todo)
        done = resumed
        while queue or pending:
            while queue and len(pending) < max_in_flight:
                j = queue.pop(0)
                a, b = ranges[j]
                ref = task.remote(toml_text, source, base, a, b, cpus_per_task, log)
                pending[ref] = j
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                j = pending.pop(ref)
                data, stats = ray.get(ref)
                _write_atomic(files[j], data)
                sims += stats["simulations"] + stats["setup_simulations"]
                days += stats["patient_days"] + stats["setup_patient_days"]
                done += ranges[j][1] - ranges[j][0]
                if cb is not None:
                    cb(done)
        wall = time.perf_counter() - t0
        res = _native.trial_assemble(toml_text, "toml", source, base, out, files, sims, days, resumed, wall)
    finally:
        close()
        if owns:
            ray.shutdown()
    shutil.rmtree(cdir, ignore_errors=True)
    return TrialResult(res)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m medtwin.ray_run SPEC --out DIR [--address A] [--resume] [--chunk-patients N]``:
    prints the summary as ``medtwin trial run`` does; exit 2 on bad input, 130 on Ctrl-C."""
    import argparse

    from . import MedtwinError, InputError, ScenarioError

    p = argparse.ArgumentParser(prog="python -m medtwin.ray_run", description="Run a medtwin trial on Ray.")
    p.add_argument("spec", help="trial specification (TOML)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--address", default=None, help="Ray address: auto, local, HOST:PORT (default: RAY_ADDRESS or auto-detect)")
    p.add_argument("--resume", action="store_true", help="complete an interrupted Ray run in --out")
    p.add_argument("--chunk-patients", type=int, default=None, help="patients per Ray task")
    p.add_argument("--cpus-per-task", type=int, default=1, help="Ray CPUs (and threads) per task")
    p.add_argument("--max-retries", type=int, default=3, help="re-runs of a chunk whose worker died")
    a = p.parse_args(argv)
    try:
        r = run_ray(
            pathlib.Path(a.spec),
            a.out,
            address=a.address,
            chunk_patients=a.chunk_patients,
            resume=a.resume,
            progress=sys.stderr.isatty(),
            cpus_per_task=a.cpus_per_task,
            max_retries=a.max_retries,
        )
    except KeyboardInterrupt:
        print(f"error: interrupted; finished chunks are kept in {os.path.join(a.out, CHUNK_DIR)} (complete them with --resume)", file=sys.stderr)
        return 130
    except (InputError, ScenarioError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (MedtwinError, ImportError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(r.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
