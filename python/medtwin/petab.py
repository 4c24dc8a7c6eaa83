"""PEtab v1 parameter-estimation problems over SBML models (``medtwin petab llh|fit``; crate
``medtwin-petab``, the functions the CLI calls).

>>> r = medtwin.petab.llh("tests/data/petab/Boehm_JProteomeRes2014/Boehm_JProteomeRes2014.yaml")
>>> r.llh, r.residuals.to_pandas()
>>> f = medtwin.petab.fit("…/Boehm_JProteomeRes2014.yaml", starts=10)
>>> f["starts"][0]["objective"], f["ids"]

A problem is its YAML file (PEtab v1: one SBML model, condition, measurement, observable and
parameter tables; paths relative to the YAML). Both functions release the GIL; ``fit`` runs its
starts and finite differences on all cores.

Errors: :class:`medtwin.InputError` (files, YAML, tables, formulas, options; the message names the
file and line), :class:`medtwin.SbmlError` (the model), :class:`medtwin.SimulationError` (the
nominal simulation failed).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

from . import _native

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["llh", "fit", "Llh"]

PathLike = Union[str, "os.PathLike[str]"]


class Llh:
    """The log-likelihood of a problem at its nominal parameters and its parts."""

    def __init__(self, d: Dict[str, Any]) -> None:
        import pyarrow as pa

        from . import _arrow

        #: Log-likelihood (natural log), the sum of the measurements' contributions in table order:
        #: the number ``medtwin petab llh`` prints as ``llh = …``.
        self.llh: float = d["llh"]
        #: Measurements in the problem.
        self.n_measurements: int = d["n_measurements"]
        #: Simulations run (one per (pre-equilibration, simulation) condition pair).
        self.n_simulations: int = d["n_simulations"]
        #: Simulations that failed at the requested tolerance and were repeated at looser ones.
        self.retries: int = d["retries"]
        #: One row per measurement (``medtwin petab llh --residuals``): ``line`` (1-based line of
        #: the measurement table), ``observable``, ``time``, ``measurement``, ``simulated`` (the
        #: observable untransformed), ``sigma`` (noise parameter: σ, or b for Laplace noise) and
        #: ``llh`` (its log-likelihood contribution).
        self.residuals: "pa.Table" = pa.table(
            {
                "line": pa.array(d["line"], pa.int64()),
                "observable": pa.array(d["observable"], pa.string()),
                "time": _arrow.f64(d["time"]),
                "measurement": _arrow.f64(d["measurement"]),
                "simulated": _arrow.f64(d["simulated"]),
                "sigma": _arrow.f64(d["sigma"]),
                "llh": _arrow.f64(d["llh_i"]),
            }
        )

    def __float__(self) -> float:
        return self.llh

    def __repr__(self) -> str:
        return f"<medtwin.petab.Llh {self.llh!r}: {self.n_measurements} measurements, {self.n_simulations} simulations>"


def llh(problem: PathLike, *, rtol: float = 1e-8, atol: float = 1e-12) -> Llh:
    """Log-likelihood of a PEtab problem at its nominal parameters (``medtwin petab llh
    PROBLEM.yaml [--rtol R] [--atol A] [--residuals]``; same number, same tolerances: ``rtol``
    relative, ``atol`` absolute scaled per state)."""
    return Llh(_native.petab_llh(os.fspath(problem), float(rtol), float(atol)))


def fit(
    problem: PathLike,
    *,
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
) -> Dict[str, Any]:
    """Multi-start maximum-likelihood fit of the estimated parameters on their parameter scale
    within their bounds (``medtwin petab fit PROBLEM.yaml --starts N --seed S … --out
    fit.json``; options and defaults are the CLI's).

    ``optimizer``: ``"lm"`` (Levenberg–Marquardt on the Fisher information) or ``"bfgs"``;
    ``gradient`` (the Jacobians of ``"lm"``): ``"sens"`` (forward sensitivities; finite
    differences where they fail, e.g. models with events) or ``"fd"`` (central finite differences);
    ``sampler``: ``"lhs"`` (Latin hypercube) or ``"uniform"``; with ``nominal_start`` start 0 is the
    nominal vector. ``max_evals`` objective evaluations per start, ``time_limit`` seconds per start,
    ``sim_time_limit`` seconds per simulation (a slower one counts as failed), ``fd_step`` the
    finite-difference step on the parameter scale.

    Returns the CLI's ``--out`` JSON as a dict: ``ids`` and ``scales`` of the estimated parameters,
    ``nominal_objective`` (negative log-likelihood at the nominal vector), ``seconds``, and
    ``starts`` (per start: ``start``, ``nominal``, ``initial_objective``, ``objective``, ``x``
    (on the parameter scale, in the order of ``ids``), ``evals``, ``converged``, ``draws``,
    ``seconds``), sorted by objective, best first. Added here: ``best`` (= ``starts[0]``), and
    ``n_within_0.1`` / ``n_sampled_within_0.1``: the starts (all / sampled only) within 0.1 of the
    best objective, which the CLI prints."""
    for name, v in (("starts", starts), ("seed", seed), ("max_evals", max_evals)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise TypeError(f"{name} must be a non-negative int, not {v!r}")
    out, near, near_sampled = _native.petab_fit(
        os.fspath(problem),
        starts,
        seed,
        max_evals,
        float(fd_step),
        str(optimizer),
        str(gradient),
        str(sampler),
        bool(nominal_start),
        None if time_limit is None else float(time_limit),
        float(sim_time_limit),
        float(rtol),
        float(atol),
    )
    res: Dict[str, Any] = json.loads(out)
    res["best"] = res["starts"][0]
    res["n_within_0.1"] = near
    res["n_sampled_within_0.1"] = near_sampled
    return res
