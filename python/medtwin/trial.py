"""In-silico trials on virtual cohorts (``medtwin trial run|analyze``), on all cores of this machine.

>>> spec = {"cohort": {"from": "simglucose-30", "group": "adult", "n": 100, "seed": 7},
...         "scenario": {"days": 1, "random_meals_seed": 11, "sensor": {"kind": "dexcom", "noise": True}},
...         "design": {"kind": "crossover"},
...         "arm": [{"name": "bb", "controller": {"kind": "basal-bolus", "target_mg_dl": 140}},
...                 {"name": "pid", "controller": {"kind": "pid"}}],
...         "endpoint": [{"metric": "tir_pct"}]}
>>> r = medtwin.trial.run(spec, "trial-out")
>>> r.results.to_pandas()          # one row per patient x arm (results.parquet)
>>> r.summary["endpoints"]["tir_pct"]["effect"]

The spec is the CLI's trial TOML (README "In-silico trials") as a dict, TOML text or a path.
Results are byte-identical to ``medtwin trial run`` (same seeds, same row order, whatever the
thread count). Ctrl-C stops after the patients in flight, keeps ``results.partial.parquet`` and
raises ``KeyboardInterrupt``; ``resume=True`` completes it.

``backend="ray"`` runs the cohort in chunks as Ray tasks on a cluster (:mod:`medtwin.ray_run`),
with the same bytes out::

    r = medtwin.trial.run(spec, "trial-out", backend="ray", address="auto", chunk_patients=256)
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Union

from . import _native

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["run", "analyze", "TrialResult"]

SpecLike = Union[str, "os.PathLike[str]", Mapping[str, Any]]


class TrialResult:
    """What :func:`run` produced: file paths, throughput, and the analysis."""

    def __init__(self, info: Dict[str, Any]) -> None:
        #: ``DIR/results.parquet``.
        self.results_path: str = os.fspath(info["results_path"])
        #: ``DIR/summary.json``.
        self.summary_path: str = os.fspath(info["summary_path"])
        #: Simulations run (patients × arms, plus run-ins).
        self.simulations: int = info["simulations"]
        #: Simulated patient-days.
        self.patient_days: int = info["patient_days"]
        #: Wall time, s.
        self.wall_s: float = info["wall_s"]
        #: Throughput, patient-days per second of wall time.
        self.patient_days_per_s: float = info["patient_days_per_s"]
        #: Patients taken from a partial file by ``resume=True``.
        self.resumed_patients: int = info["resumed_patients"]
        #: The CLI's printed summary.
        self.text: str = info["text"]

    @property
    def results(self) -> "pa.Table":
        """``results.parquet`` as a ``pyarrow.Table`` (one row per patient × arm)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.results_path)

    @property
    def summary(self) -> Dict[str, Any]:
        """``summary.json``: per arm n/mean/SD/median/IQR, effects with 95 % CI, PROCOVA."""
        with open(self.summary_path, encoding="utf-8") as f:
            out: Dict[str, Any] = json.load(f)
        return out

    def __repr__(self) -> str:
        return f"<TrialResult {self.patient_days} patient-days in {self.wall_s:.2f} s -> {self.results_path}>"


def _spec_source(spec: SpecLike) -> "tuple[str, str, str, str]":
    """(text, format, source name, base dir for relative paths in the spec)."""
    if isinstance(spec, Mapping):
        return json.dumps(spec, allow_nan=False), "json", "<dict>", os.getcwd()
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and "\n" not in spec and spec.endswith(".toml")):
        path = os.fspath(spec)
        with open(path, encoding="utf-8") as f:
            return f.read(), "toml", path, os.path.dirname(os.path.abspath(path))
    if isinstance(spec, str):
        return spec, "toml", "<string>", os.getcwd()
    raise TypeError(f"spec must be a dict, TOML text or a path to a .toml file, not {type(spec).__name__}")


def _tqdm_progress(total: Optional[int]) -> "tuple[Optional[Callable[[int], None]], Callable[[], None]]":
    try:
        from tqdm.auto import tqdm  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None, lambda: None
    bar = tqdm(total=total, unit="patient")

    def update(n: int) -> None:
        bar.update(n - bar.n)

    return update, bar.close


def run(
    spec: SpecLike,
    out_dir: Union[str, "os.PathLike[str]"],
    *,
    resume: bool = False,
    progress: Union[bool, Callable[[int], None]] = True,
    backend: str = "local",
    address: Optional[str] = None,
    chunk_patients: Optional[int] = None,
    **ray_options: Any,
) -> TrialResult:
    """Run an in-silico trial and analyse it (``medtwin trial run SPEC --out DIR``).

    Parameters
    ----------
    spec:
        The trial spec (``[cohort]``, ``[scenario]``, ``[design]``, ``[[arm]]``, ``[[endpoint]]``,
        optional ``[prognostic]``, ``[execution]``) as a dict, TOML text or a ``.toml`` path.
    out_dir:
        Directory for ``results.parquet``, ``summary.json`` and ``plots/``.
    resume:
        Complete ``out_dir/results.partial.parquet`` left by an interrupted run.
    progress:
        ``True``: a tqdm bar when tqdm is installed; ``False``: none; or a callable given the
        number of patients finished (called about every 50 ms from this thread; an exception it
        raises stops the run as Ctrl-C does and is re-raised).
    backend:
        ``"local"`` (all cores of this machine) or ``"ray"``: chunks of ``chunk_patients``
        patients as Ray tasks on the cluster at ``address`` (``None``, ``"auto"``, ``"local"``
        or ``"HOST:PORT"``), finished chunks kept in ``out_dir/ray-chunks/`` until the end
        (``resume=True`` then re-runs only the missing ones), output byte-identical to the local
        backend. ``ray_options``: ``cpus_per_task``, ``max_retries``, ``max_in_flight``,
        ``attempt_log`` (see :func:`medtwin.ray_run.run_ray`).

    Raises :class:`medtwin.ScenarioError` (bad spec), :class:`medtwin.InputError` (cohort file,
    resume mismatch), :class:`medtwin.SimulationError`, ``KeyboardInterrupt`` (Ctrl-C).
    """
    if backend == "ray":
        from .ray_run import run_ray

        return run_ray(
            spec,
            out_dir,
            address=address,
            chunk_patients=chunk_patients,
            resume=resume,
            progress=progress,
            **ray_options,
        )
    if backend != "local":
        raise ValueError(f"backend must be 'local' or 'ray', not {backend!r}")
    if address is not None or chunk_patients is not None or ray_options:
        raise TypeError("address, chunk_patients and Ray options need backend='ray'")
    text, fmt, source, base = _spec_source(spec)
    close: Callable[[], None] = lambda: None
    cb: Optional[Callable[[int], None]]
    if progress is True:
        n = None
        if isinstance(spec, Mapping):
            n = (spec.get("cohort") or {}).get("n")
        cb, close = _tqdm_progress(n)
    elif progress is False:
        cb = None
    else:
        cb = progress
    try:
        info = _native.trial_run(text, fmt, source, base, os.fspath(out_dir), resume, cb)
    finally:
        close()
    return TrialResult(info)


def analyze(directory: Union[str, "os.PathLike[str]"], *, bootstrap: int = 0, seed: int = 1) -> Dict[str, Any]:
    """Re-analyse a trial directory (``medtwin trial analyze``): writes and returns ``summary.json``
    (``bootstrap`` resamples add percentile CIs)."""
    path = _native.trial_analyze(os.fspath(directory), int(bootstrap), int(seed))
    with open(path, encoding="utf-8") as f:
        out: Dict[str, Any] = json.load(f)
    return out
