"""medtwin from Python: the Rust engine of medical digital twins, bound with PyO3.

Bound so far:

* :func:`simulate` — the UVA/Padova S2008 type 1 diabetes simulator with the CLI's scenario schema
  (``medtwin simulate``), results as Arrow tables (``.to_pandas()``, ``polars.from_arrow``);
* :func:`patients` — the 30 bundled virtual patients;
* :mod:`medtwin.sbml` — load any SBML model and simulate it (``medtwin sbml simulate``);
* :mod:`medtwin.pk` — NONMEM-style event tables: NCA and FOCE-I population fits (``medtwin pk``);
* :mod:`medtwin.twin` — T1D patient twins on real records: fit, update, forecast (``medtwin twin``);
  :mod:`medtwin.twin.generic` (= :mod:`medtwin.generic`) — twins of any SBML model
  (``medtwin twin fit MODEL.xml``);
* :mod:`medtwin.petab` — PEtab problems: log-likelihood and multi-start fits (``medtwin petab``);
* :mod:`medtwin.trial` — in-silico trials on virtual cohorts: run, analyze (``medtwin trial``).

Errors are :class:`MedtwinError` subclasses; long computations release the GIL.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Mapping, Tuple, Union, overload

if TYPE_CHECKING:  # pyarrow is imported lazily at run time (import medtwin stays fast)
    import pyarrow as pa
    from typing import Literal

from . import _native
from ._native import (
    InputError,
    MedtwinError,
    RefusedError,
    ScenarioError,
    SbmlError,
    SimulationError,
    UnsupportedError,
)

__version__: str = _native.__version__

__all__ = [
    "simulate",
    "patients",
    "MedtwinError",
    "InputError",
    "ScenarioError",
    "SbmlError",
    "UnsupportedError",
    "SimulationError",
    "RefusedError",
    "sbml",
    "pk",
    "twin",
    "generic",
    "petab",
    "trial",
    "__version__",
]

ScenarioLike = Union[str, "os.PathLike[str]", Mapping[str, Any]]


def _scenario_source(scenario: ScenarioLike) -> Tuple[str, str, str]:
    """(text, format, source name) of a scenario given as dict, TOML text or path."""
    if isinstance(scenario, Mapping):
        try:
            text = json.dumps(scenario, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ScenarioError(f"<dict>: (dict): not expressible as a scenario: {e}") from None
        return text, "json", "<dict>"
    if isinstance(scenario, os.PathLike):
        path = os.fspath(scenario)
        with open(path, encoding="utf-8") as f:
            return f.read(), "toml", path
    if isinstance(scenario, str):
        if "\n" not in scenario and "=" not in scenario and scenario.endswith(".toml"):
            with open(scenario, encoding="utf-8") as f:
                return f.read(), "toml", scenario
        return scenario, "toml", "<string>"
    raise TypeError(
        f"scenario must be a dict, TOML text or a path to a .toml file, not {type(scenario).__name__}"
    )


@overload
def simulate(scenario: ScenarioLike, *, summary: "Literal[False]" = ...) -> "pa.Table": ...
@overload
def simulate(scenario: ScenarioLike, *, summary: "Literal[True]") -> "Tuple[pa.Table, pa.Table]": ...
def simulate(scenario: ScenarioLike, *, summary: bool = False) -> Any:
    """Simulate a type 1 diabetes scenario exactly as ``medtwin simulate`` does.

    Parameters
    ----------
    scenario:
        The CLI's scenario schema (README "Simulate") as a dict
        (``{"patient": "adult#001", "duration_min": 1440, "meal": [{"at_min": 420, "carbs_g": 45}]}``),
        as TOML text, or as a path to a ``.toml`` file. ``patient`` may be a name, a list of
        names or ``"all"``.
    summary:
        Also return the per-patient summary (the CLI's ``--summary`` CSV).

    Returns
    -------
    pyarrow.Table
        The trajectory, one row per patient and minute: ``n_patients × (duration_min + 1)`` rows
        with columns ``patient`` (dictionary-encoded string), ``t_min`` (int64, minutes since the
        start), ``plasma_glucose_mg_dl``, ``sc_glucose_mg_dl``, ``cgm_mg_dl`` (the CGM reading in
        force, held between samples), ``cgm_sampled`` (bool: the sensor sampled at ``t_min``),
        ``insulin_u_per_min`` and ``carbs_g_per_min`` (inputs over ``[t, t+1)``, 0 on the last
        row), all float64 in the units their names give. Values are identical to the CLI's CSV.
        Use ``.to_pandas()`` or ``polars.from_arrow(table)``.
    (trajectory, summary) when ``summary=True``:
        ``summary`` has one row per patient: ``patient``, ``mean_mg_dl``, ``sd_mg_dl``,
        ``cv_pct``, ``gmi_pct``, ``tbr54_pct``, ``tbr70_pct``, ``tir_pct``, ``tar180_pct``,
        ``tar250_pct``, ``lbgi``, ``hbgi``, ``risk_index``, ``total_insulin_u``,
        ``total_carbs_g`` (unrounded; the CLI prints 4–6 decimals) and ``n_cgm_samples``,
        computed on the subcutaneous glucose at the CGM sample times.

    Raises
    ------
    ScenarioError
        The scenario does not validate (the message names the field and the value).
    SimulationError
        The integrator failed.

    Patients run in parallel on all cores with the GIL released; results do not depend on the
    thread count (per-patient seeds as in the CLI).
    """
    from . import _arrow

    text, fmt, source = _scenario_source(scenario)
    out = _native.simulate_t1d(text, fmt, source, True)
    cols = out["columns"]
    import pyarrow as pa

    traj = pa.table(
        {
            "patient": _arrow.dictionary(cols["patient_index"], out["patients"]),
            "t_min": _arrow.i64(cols["t_min"]),
            "plasma_glucose_mg_dl": _arrow.f64(cols["plasma_glucose_mg_dl"]),
            "sc_glucose_mg_dl": _arrow.f64(cols["sc_glucose_mg_dl"]),
            "cgm_mg_dl": _arrow.f64(cols["cgm_mg_dl"]),
            "cgm_sampled": _arrow.boolean(cols["cgm_sampled"]),
            "insulin_u_per_min": _arrow.f64(cols["insulin_u_per_min"]),
            "carbs_g_per_min": _arrow.f64(cols["carbs_g_per_min"]),
        }
    )
    if summary:
        return traj, _summary_table(out["summary"])
    return traj


def _summary_table(s: Mapping[str, Any]) -> "pa.Table":
    import pyarrow as pa

    d = dict(s)
    d["n_cgm_samples"] = [int(x) for x in d["n_cgm_samples"]]
    return pa.table(d)


def simulate_summary(scenario: ScenarioLike) -> "pa.Table":
    """Only the per-patient summary of :func:`simulate` (the CLI's ``--no-trajectory --summary``):
    a ``pyarrow.Table`` with one row per patient; nothing per minute is kept, so memory stays
    small for long or large runs."""
    text, fmt, source = _scenario_source(scenario)
    out = _native.simulate_t1d(text, fmt, source, False)
    return _summary_table(out["summary"])


def patients() -> "pa.Table":
    """The 30 bundled virtual patients (simglucose 0.2.11) as a ``pyarrow.Table``: ``patient``,
    ``age_years``, ``body_weight_kg``, ``basal_glucose_mg_dl``, ``carb_ratio_g_per_u``,
    ``correction_factor_mg_dl_per_u``, ``basal_u_per_h``, ``total_daily_insulin_u``."""
    import pyarrow as pa

    return pa.table(_native.t1d_patients())


def __getattr__(name: str) -> Any:
    # Submodules load on first use, so ``import medtwin`` stays fast.
    if name in ("sbml", "pk", "twin", "generic", "petab", "trial"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'medtwin' has no attribute {name!r}")
