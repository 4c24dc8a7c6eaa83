"""Type stubs of the compiled module ``medtwin._native`` (Rust, PyO3). Use the ``medtwin`` API instead."""

from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

__version__: str

class MedtwinError(Exception): ...
class InputError(MedtwinError): ...
class ScenarioError(InputError): ...
class SbmlError(MedtwinError): ...
class UnsupportedError(SbmlError): ...
class SimulationError(MedtwinError): ...
class RefusedError(MedtwinError): ...

def simulate_t1d(text: str, format: str, source: str, trajectory: bool = True) -> Dict[str, Any]: ...
def check_scenario(text: str, format: str, source: str) -> Tuple[List[str], int]: ...
def t1d_patients() -> Dict[str, List[Any]]: ...

class NativeSbmlModel:
    @staticmethod
    def from_file(path: Union[str, PathLike[str]]) -> NativeSbmlModel: ...
    @staticmethod
    def from_text(text: str) -> NativeSbmlModel: ...
    def copy(self) -> NativeSbmlModel: ...
    def species_ids(self) -> List[str]: ...
    def parameter_ids(self) -> List[str]: ...
    def default_variables(self) -> List[str]: ...
    def value(self, id: str) -> Optional[float]: ...
    def set_value(self, id: str, value: float) -> None: ...
    def state_index(self, id: str) -> Optional[int]: ...
    def info(self) -> str: ...
    def simulate(
        self,
        start: float,
        end: float,
        steps: int,
        vars: Optional[Sequence[str]] = None,
        amount: Sequence[str] = ...,
        concentration: Sequence[str] = ...,
        rtol: Optional[float] = None,
        atol: Optional[float] = None,
        method: str = "auto",
        max_step: Optional[float] = None,
        times: Optional[Sequence[float]] = None,
        doses: Sequence[Tuple[float, str, float]] = ...,
    ) -> Tuple[List[str], List[bytes]]: ...

def pk_check_table(text: str, source: str) -> Tuple[str, int, int, int]: ...
def pk_import_r(kind: str, path: Union[str, PathLike[str]]) -> str: ...
def pk_nca(text: str, source: str, route: str, infusion_h: Optional[float] = None) -> str: ...
def pk_fit(
    text: str,
    source: str,
    model: str,
    parameters: Sequence[str] = ...,
    iiv: Sequence[str] = ...,
    covariates: Sequence[str] = ...,
    error: str = "additive",
    full_omega: bool = False,
    standard_errors: bool = True,
) -> str: ...

def pk_twin(pop: str, text: str, source: str, id: str) -> Tuple[str, List[Tuple[str, float]], int, int, float]:
    """``(twin JSON, [(parameter, MAP value)], n_levels, n_samples, ess)`` (``medtwin pk twin``). GIL released."""
def pk_twin_info(twin: str) -> Tuple[List[Tuple[str, float]], int, float]: ...
def pk_recommend(
    twin: str,
    target: str,
    value: float,
    interval_h: Optional[float] = None,
    cmt: int = 1,
    infusion_h: float = 0.0,
    toxic: Optional[float] = None,
    max_risk: float = 0.1,
    round_to: float = 0.0,
) -> Tuple[str, List[Tuple[float, Optional[str], Optional[str]]]]:
    """``medtwin pk recommend --json``'s document and the intervals tried (``interval_h=None``).
    RefusedError / InputError. GIL released."""

def twin_import_t1d_uom(dir: Union[str, PathLike[str]], participant: str, out: Union[str, PathLike[str]]) -> int: ...
def twin_record_span(record: Union[str, PathLike[str]]) -> Tuple[float, str]: ...
def twin_fit(
    record: Union[str, PathLike[str]], until_min: Optional[float] = None, particles: int = 500, seed: int = 1
) -> Tuple[str, Dict[str, Any]]: ...
def twin_update(twin: str, record: Union[str, PathLike[str]], until_min: Optional[float] = None) -> str: ...
def twin_forecast(twin: str, horizon: int) -> Dict[str, Any]: ...
def twin_whatif(
    twin: str, plans: Sequence[Tuple[str, str, bool]], horizon: int = 240, seed: Optional[int] = None
) -> List[Dict[str, Any]]:
    """Plans ``(name, text, is_json)`` -> one dict per plan: ``name``, ``t_min`` and the seven band
    columns (f64 bytes; minutes after the twin's time, mg/dL), ``p_below_70``, ``p_below_54``,
    ``p_above_250``, ``expected_tir_pct``, ``expected_risk_index``. GIL released."""
def twin_advise(
    twin: str, carbs_g: float, at_min: float = 0.0, cr: Optional[float] = None, cf: Optional[float] = None, target: float = 120.0
) -> str:
    """``medtwin twin advise --json``'s document. GIL released."""
def twin_backtest(
    record: Union[str, PathLike[str]],
    from_min: float = 0.0,
    to_min: Optional[float] = None,
    origin_every_min: float = 60.0,
    horizons: Sequence[int] = ...,
    particles: int = 500,
    future_inputs_recorded: bool = False,
) -> str:
    """Rolling-origin backtest; ``metrics.json`` as a JSON string."""

def trial_run(
    text: str,
    format: str,
    source: str,
    base_dir: Union[str, PathLike[str]],
    out_dir: Union[str, PathLike[str]],
    resume: bool = False,
    progress: Optional[Any] = None,
) -> Dict[str, Any]: ...
def trial_analyze(dir: Union[str, PathLike[str]], bootstrap: int = 0, seed: int = 1) -> str: ...

# Chunked execution (the Ray backend, medtwin.ray_run).
def trial_info(text: str, format: str, source: str, base_dir: Union[str, PathLike[str]]) -> Dict[str, Any]:
    """``{"n_patients", "fingerprint", "chunk_patients", "toml"}`` of a specification (loads the cohort)."""
def trial_chunk(
    text: str,
    format: str,
    source: str,
    base_dir: Union[str, PathLike[str]],
    start: int,
    end: int,
    threads: int = 0,
) -> Tuple[bytes, Dict[str, Any]]:
    """Simulate patients ``start..end`` on ``threads`` threads (0: all cores) into an in-memory
    Parquet chunk; stats ``start, end, simulations, patient_days, setup_simulations,
    setup_patient_days, wall_s`` (setup: the prognostic model's fit when this call built the
    plan, cached per process). GIL released."""
def trial_chunk_range(path: Union[str, PathLike[str]]) -> Tuple[int, int]:
    """``(start, end)`` of a chunk file (InputError if it is not one)."""
def trial_assemble(
    text: str,
    format: str,
    source: str,
    base_dir: Union[str, PathLike[str]],
    out_dir: Union[str, PathLike[str]],
    chunk_files: Sequence[Union[str, PathLike[str]]],
    simulations: int,
    patient_days: int,
    resumed_patients: int,
    wall_s: float,
) -> Dict[str, Any]:
    """Chunk files covering the cohort once -> ``out_dir/results.parquet`` (byte-identical to
    :func:`trial_run`'s) + ``summary.json`` + ``plots/``; the same dict as :func:`trial_run`."""

# Generic (SBML) twins: medtwin.twin.generic. Specs, plans and histories are
# ``(text, "toml"|"json", origin)``; twins cross as their JSON document (format medtwin-twin-core).
_Doc = Tuple[str, str, str]

def generic_fit(
    sbml: str,
    model_origin: str,
    time_unit: str,
    data: str,
    data_origin: str,
    estimate: Sequence[str],
    spec: Optional[_Doc] = None,
    noise: Sequence[str] = ...,
    history: Optional[_Doc] = None,
) -> str:
    """Calibrate (``medtwin twin fit MODEL.xml``); the twin JSON. GIL released."""
def generic_backtest(
    sbml: str,
    model_origin: str,
    time_unit: str,
    data: str,
    data_origin: str,
    estimate: Sequence[str],
    origins: Sequence[float],
    window: float,
    spec: Optional[_Doc] = None,
    noise: Sequence[str] = ...,
    history: Optional[_Doc] = None,
) -> str:
    """Rolling-origin backtest; the JSON of ``BacktestResult``. GIL released."""
def generic_update(twin: str, data: str, data_origin: str, doses: Optional[_Doc] = None) -> Tuple[str, int]:
    """(updated twin JSON, number of new measurements). GIL released."""
def generic_info(twin: str) -> Dict[str, Any]:
    """``time_unit, last_time, n_measurements, observables, estimated, outcome_classes, log_lik_map,
    ess, samples, laplace_ok, seed, summary, map_values``."""
def generic_forecast(twin: str, until: float, step: Optional[float] = None, plan: Optional[_Doc] = None) -> Dict[str, Any]:
    """Columns ``time, observable`` (int32 bytes into ``observables``), ``median, lo50 … hi95``
    (float64 bytes), ``outcome_probabilities`` ([(class, p)]), ``failed_samples``. GIL released."""
def generic_whatif(twin: str, plans: Sequence[Tuple[str, str, str]], until: float, step: Optional[float] = None) -> List[Tuple[str, Dict[str, Any]]]:
    """Plans ``(name, text, "toml"|"json")`` -> ``[(name, forecast columns)]``. GIL released."""
def generic_load(text: str, origin: str) -> str:
    """Check a twin document and return it re-serialised."""
def generic_sepsis() -> Tuple[str, str]:
    """(SBML text, spec TOML) of the sepsis twin embedded in the library."""
def generic_sepsis_outcome(k_pg: float, p0: float, plan: Optional[_Doc] = None) -> str:
    """Outcome class at 1000 h of a sepsis patient. GIL released."""

# PEtab: medtwin.petab.
def petab_llh(problem: Union[str, PathLike[str]], rtol: float = 1e-8, atol: float = 1e-12) -> Dict[str, Any]:
    """``llh, n_measurements, n_simulations, retries`` and residual columns ``line, observable``
    (lists), ``time, measurement, simulated, sigma, llh_i`` (float64 bytes). GIL released."""
def petab_fit(
    problem: Union[str, PathLike[str]],
    starts: int = 10,
    seed: int = 0,
    max_evals: int = 4000,
    fd_step: float = 1e-4,
    optimizer: str = "lm",
    gradient: str = "sens",
    sampler: str = "lhs",
    nominal_start: bool = True,
    time_limit: Optional[float] = None,
    sim_time_limit: float = 10.0,
    rtol: float = 1e-8,
    atol: float = 1e-12,
) -> Tuple[str, int, int]:
    """(``FitResult`` JSON as ``petab fit --out``, starts within 0.1 of the best, of them sampled). GIL released."""
