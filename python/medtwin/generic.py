"""Twins of any SBML model (``medtwin twin fit MODEL.xml --data … --estimate …``): calibrate a
model's parameters to one patient's measurements, then update, forecast, compare plans and backtest
(``medtwin_twin_core``'s lifecycle, the functions the CLI calls). Also reachable as
``medtwin.twin.generic``.

>>> tw = medtwin.twin.generic.fit("tests/data/biomodels/BIOMD0000000714.xml",
...                               "tests/data/sepsis/aseptic_0-12h.tsv",
...                               prior="tests/data/sepsis/spec.toml")
>>> fc = tw.forecast(until=48, step=6)            # Forecast: .table, .probabilities
>>> fc.table.to_pandas()                          # time, observable, median, lo50 … hi95
>>> tw = tw.update("tests/data/sepsis/aseptic_12-24h.tsv")
>>> out = tw.whatif({"none": {}, "dose": {"dose": [{"time": 24, "target": "C_A", "amount": 1}]}}, until=48)
>>> out["dose"].probabilities["healthy"]
>>> tw.save("twin.json")                          # medtwin twin forecast twin.json --until 48 …

**Measurements** are PEtab's measurement table: columns ``observableId`` (a model id), ``time`` (the
model's time unit, ≥ 0), ``measurement`` (the observable's unit) and optionally ``noiseParameters``
(σ of that measurement); other columns are ignored. Give a path to the TSV file, TSV text, a
``pyarrow.Table`` or a pandas/polars ``DataFrame``.

**Plans** (the dosing history ``doses=``, what-if and forecast plans) are the CLI's plan TOML
``[[dose]] time, target, amount[, duration]``: a path to a ``.toml`` file, TOML text, a dict
``{"dose": [{"time": 24, "target": "C_A", "amount": 1.0}]}`` or a list of such dose dicts. ``time``
in the model's time unit from the model's start, ``target`` a state of the model (a species amount
or a rate-ruled parameter), ``amount`` in the target's amount unit; SBML twins take instantaneous
doses only (``duration`` 0).

**Priors** (``prior=``): the calibration spec TOML (``[[estimate]]`` with priors and bounds,
``[[observable]]`` noise models, ``[outcomes]``, ``samples``, ``seed``; README "Twins of any
model") as a path, TOML text or a dict of the same document. ``estimate=[ids]`` without a spec
entry get the CLI's default prior (log-normal at the nominal value, SD 1 on the log scale; normal
when the nominal value is ≤ 0); ``noise={"D": "log-normal:0.25", "Nstar": "normal:0.1"}`` sets
an observable's noise (σ on the log scale or in the observable's unit).

Errors: :class:`medtwin.InputError` (bad data, spec, plan or twin file; the message names the
line or id), :class:`medtwin.SbmlError` / :class:`medtwin.UnsupportedError` (the model),
:class:`medtwin.SimulationError` (a simulation or the calibration failed, a dose into a quantity
that is not a state). Calibration, forecasts and backtests release the GIL.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import _native
from ._native import InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["fit", "load", "from_json", "backtest", "sepsis", "sepsis_outcome", "GenericTwin", "Forecast"]

PathLike = Union[str, "os.PathLike[str]"]
DataLike = Union[PathLike, Any]
PlanLike = Union[None, PathLike, Mapping[str, Any], Sequence[Mapping[str, Any]]]
SpecLike = Union[None, PathLike, Mapping[str, Any]]
NoiseLike = Union[None, Mapping[str, str], Sequence[str]]

_COLUMNS = ("observableId", "time", "measurement", "noiseParameters")


def _is_path_text(s: str, suffixes: Tuple[str, ...]) -> bool:
    return "\n" not in s and s.strip().lower().endswith(suffixes)


def _read(path: PathLike) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise InputError(f"{os.fspath(path)}: {e.strerror or e}") from None


def _model(model: PathLike) -> Tuple[str, str]:
    """(SBML text, origin) of a path or SBML text."""
    if isinstance(model, os.PathLike) or (isinstance(model, str) and not model.lstrip().startswith("<")):
        return _read(model), os.fspath(model)
    if isinstance(model, str):
        return model, "<sbml>"
    raise TypeError(f"model must be a path to an SBML file or SBML text, not {type(model).__name__}")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # shortest repr: reads back as the same float64
    return str(v)


def _data(data: DataLike, what: str = "data") -> Tuple[str, str]:
    """(measurement TSV text, origin) of a path, TSV text or a table."""
    if isinstance(data, os.PathLike) or (isinstance(data, str) and "\t" not in data and "\n" not in data):
        return _read(data), os.fspath(data)
    if isinstance(data, str):
        return data, f"<{what}>"
    mod = type(data).__module__.split(".")[0]
    if mod == "pandas":
        import pyarrow as pa

        data = pa.Table.from_pandas(data, preserve_index=False)
    elif mod == "polars":
        data = data.to_arrow()
    elif mod != "pyarrow":
        raise TypeError(
            f"{what} must be a path, TSV text, a pyarrow.Table or a pandas/polars DataFrame, not {type(data).__name__}"
        )
    names = [c for c in _COLUMNS if c in data.column_names]
    cols = [data.column(c).to_pylist() for c in names]
    lines = ["\t".join(names)]
    for row in zip(*cols):
        lines.append("\t".join(_fmt(v) for v in row))
    # Line numbers in errors count this header as line 1 (row i of the table is line i + 2).
    return "\n".join(lines) + "\n", f"<{what} table>"


def _plan(plan: PlanLike, name: str = "plan") -> Optional[Tuple[str, str, str]]:
    """(text, "toml"|"json", origin) of a plan, None for no plan."""
    if plan is None:
        return None
    if isinstance(plan, os.PathLike) or (isinstance(plan, str) and _is_path_text(plan, (".toml",))):
        return _read(plan), "toml", os.fspath(plan)
    if isinstance(plan, str):
        return plan, "toml", f"<{name}>"
    if isinstance(plan, Mapping):
        doc: Any = dict(plan)
    elif isinstance(plan, Sequence):
        doc = {"dose": list(plan)}
    else:
        raise TypeError(f"{name} must be a path, TOML text, a dict or a list of doses, not {type(plan).__name__}")
    try:
        return json.dumps(doc, allow_nan=False), "json", f"<{name}>"
    except (TypeError, ValueError) as e:
        raise InputError(f"<{name}>: not expressible as a plan: {e}") from None


def _spec(prior: SpecLike) -> Optional[Tuple[str, str, str]]:
    if prior is None:
        return None
    if isinstance(prior, os.PathLike) or (isinstance(prior, str) and _is_path_text(prior, (".toml",))):
        return _read(prior), "toml", os.fspath(prior)
    if isinstance(prior, str):
        return prior, "toml", "<prior>"
    if isinstance(prior, Mapping):
        try:
            return json.dumps(dict(prior), allow_nan=False), "json", "<prior>"
        except (TypeError, ValueError) as e:
            raise InputError(f"<prior>: not expressible as a calibration spec: {e}") from None
    raise TypeError(f"prior must be a path, TOML text or a dict, not {type(prior).__name__}")


def _noise(noise: NoiseLike) -> List[str]:
    if noise is None:
        return []
    if isinstance(noise, Mapping):
        return [f"{k}={v}" for k, v in noise.items()]
    if isinstance(noise, str):
        return [noise]
    return [str(n) for n in noise]


def _ids(estimate: Union[None, str, Sequence[str]]) -> List[str]:
    if estimate is None:
        return []
    if isinstance(estimate, str):
        return [s.strip() for s in estimate.split(",") if s.strip()]
    return [str(s) for s in estimate]


_BANDS = ("median", "lo50", "hi50", "lo80", "hi80", "lo95", "hi95")


class Forecast:
    """Predictive bands of the twin's observables at the forecast times, and the outcome
    probabilities (``medtwin twin forecast``'s CSV and its ``P(class)`` lines)."""

    def __init__(self, d: Mapping[str, Any], name: Optional[str] = None) -> None:
        import pyarrow as pa

        from . import _arrow

        #: The plan's name (what-if), else None.
        self.name = name
        #: Long format, the CLI's ``forecast.csv``: ``n_observables × n_times`` rows (every time of
        #: the first observable, then the next): ``time`` (model time unit, from the model's
        #: start), ``observable`` (dictionary-encoded string), ``median`` and the 50/80/95 %
        #: predictive band limits ``lo50`` … ``hi95`` (the observable's unit; posterior parameter
        #: uncertainty and measurement noise).
        self.table: "pa.Table" = pa.table(
            {
                "time": _arrow.f64(d["time"]),
                "observable": _arrow.dictionary(d["observable"], d["observables"]),
                **{c: _arrow.f64(d[c]) for c in _BANDS},
            }
        )
        #: Outcome class → probability, in the spec's order (empty without ``[outcomes]``).
        self.probabilities: Dict[str, float] = {c: float(p) for c, p in d["outcome_probabilities"]}
        #: Posterior samples whose simulation failed (dropped, their weight renormalised away).
        self.failed_samples: int = int(d["failed_samples"])

    def __repr__(self) -> str:
        probs = ", ".join(f"P({c}) {p:.3f}" for c, p in self.probabilities.items())
        return f"<Forecast{'' if self.name is None else ' ' + repr(self.name)} {self.table.num_rows} rows{': ' + probs if probs else ''}>"


class GenericTwin:
    """A calibrated twin of an SBML model (the CLI's ``twin.json``, format ``medtwin-twin-core``):
    the model, the calibration spec, the dosing history, the measurements and the posterior
    (importance samples around the MAP). Immutable: :meth:`update` returns a new twin."""

    def __init__(self, document: str) -> None:
        self._doc = document
        info = _native.generic_info(document)
        #: Time unit of the model (every time of the twin is in it).
        self.time_unit: str = info["time_unit"]
        #: Time of the last measurement (model time unit; 0 without data).
        self.last_time: float = info["last_time"]
        #: Number of measurements assimilated.
        self.n_measurements: int = info["n_measurements"]
        #: Observables forecast (the spec's, in order).
        self.observables: List[str] = info["observables"]
        #: Estimated parameter ids.
        self.estimated: List[str] = info["estimated"]
        #: Outcome classes of the spec (empty without ``[outcomes]``).
        self.outcome_classes: List[str] = info["outcome_classes"]
        #: Log-likelihood at the MAP.
        self.log_lik_map: float = info["log_lik_map"]
        #: Effective sample size of the importance samples.
        self.ess: float = info["ess"]
        #: Number of posterior samples.
        self.samples: int = info["samples"]
        #: Whether the Laplace Hessian at the MAP was positive definite (else the proposal used the
        #: prior spread).
        self.laplace_ok: bool = info["laplace_ok"]
        #: Seed of every random draw (the spec's).
        self.seed: int = info["seed"]
        #: Model values at the MAP: the spec's fixed values, then each estimated parameter (natural
        #: scale).
        self.map_values: Dict[str, float] = dict(info["map_values"])
        self._summary: List[Tuple[str, float, float, float, float, float]] = info["summary"]

    def __repr__(self) -> str:
        return (
            f"<medtwin.twin.generic.GenericTwin {', '.join(self.estimated)}; {self.n_measurements} measurements "
            f"to t={self.last_time:g} {self.time_unit}, ESS {self.ess:.0f} of {self.samples}>"
        )

    def summary(self) -> "pa.Table":
        """Posterior of each estimated parameter (what ``twin fit`` prints): ``parameter``,
        ``map``, ``median``, ``lo95``, ``hi95`` (natural scale) and ``sd_ratio`` (posterior SD /
        prior SD on the estimation scale)."""
        import pyarrow as pa

        cols = list(zip(*self._summary)) if self._summary else [[]] * 6
        names = ["parameter", "map", "median", "lo95", "hi95", "sd_ratio"]
        return pa.table({n: pa.array(list(c), pa.string() if n == "parameter" else pa.float64()) for n, c in zip(names, cols)})

    def to_json(self) -> str:
        """The twin document (what ``medtwin twin fit MODEL.xml`` saves)."""
        return self._doc

    def save(self, path: PathLike) -> None:
        """Write the twin document; ``medtwin twin update|forecast|whatif`` read it."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self._doc)

    def update(self, data: DataLike, doses: PlanLike = None) -> "GenericTwin":
        """Assimilate new measurements and doses (``medtwin twin update twin.json DATA
        [--doses PLAN]``): measurements already in the twin (same observable, time and value) are
        skipped, the posterior is recomputed on all data warm-started at the previous MAP.
        Returns the updated twin (this one is unchanged); :attr:`n_new` holds how many
        measurements were new."""
        text, origin = _data(data)
        doc, n = _native.generic_update(self._doc, text, origin, _plan(doses, "doses"))
        t = GenericTwin(doc)
        t.n_new = n
        return t

    #: Measurements new in the last :meth:`update` (None on a twin not made by ``update``).
    n_new: Optional[int] = None

    def forecast(self, until: float, step: Optional[float] = None, plan: PlanLike = None) -> Forecast:
        """Forecast the observables from the last measurement every ``step`` (default: a
        twentieth of the span) up to and including ``until`` (model time unit) under the
        history plus ``plan`` (``medtwin twin forecast twin.json --until U [--step S] [--plan
        P]``). Any plan (none, empty, a dose) uses the same posterior samples and noise draws."""
        d = _native.generic_forecast(self._doc, _num("until", until), None if step is None else _num("step", step), _plan(plan))
        return Forecast(d)

    def whatif(self, plans: Mapping[str, PlanLike], until: float, step: Optional[float] = None) -> Dict[str, Forecast]:
        """Compare named plans (``medtwin twin whatif twin.json --plan A.toml --plan B.toml
        --until U``; the name is the file stem there) on common random numbers: name →
        :class:`Forecast` in the order given; ``{}`` (an empty plan) is "no action"."""
        if not isinstance(plans, Mapping) or not plans:
            raise InputError("plans must be a non-empty dict of name -> plan")
        native = []
        for name, plan in plans.items():
            if not isinstance(name, str) or not name:
                raise InputError(f"plan names must be non-empty strings, not {name!r}")
            p = _plan(plan, name)
            native.append((name, "", "toml") if p is None else (name, p[0], p[1]))
        out = _native.generic_whatif(self._doc, native, _num("until", until), None if step is None else _num("step", step))
        return {name: Forecast(d, name) for name, d in out}


def _num(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(v).__name__}")
    return float(v)


def fit(
    model: PathLike,
    data: DataLike,
    estimate: Union[None, str, Sequence[str]] = None,
    *,
    prior: SpecLike = None,
    noise: NoiseLike = None,
    doses: PlanLike = None,
    time_unit: str = "h",
) -> GenericTwin:
    """Calibrate an SBML model to one patient's measurements (``medtwin twin fit MODEL.xml
    --data DATA [--estimate ID,…] [--prior SPEC] [--noise ID=KIND:SIGMA] [--doses PLAN]
    [--time-unit U]``): MAP of the estimated parameters, Laplace approximation, then importance
    samples (``samples``, default 400) around it.

    ``model``: path to an SBML file or SBML text (Level 2/3 core). ``data``: measurements (see the
    module doc). ``estimate``: ids to estimate (a list or ``"k_pg,P"``); each keeps its prior
    from ``prior`` if listed there, else the default prior; without ``estimate`` the spec's
    ``[[estimate]]`` list. ``noise``: observable → ``"normal:SIGMA"`` / ``"log-normal:SIGMA"``
    (every observable of the data needs a noise model, from here or the spec). ``doses``: the
    dosing history (a plan). ``time_unit``: the model's time unit (of data, plans, outputs).

    Returns a :class:`GenericTwin`; the same document as the CLI's ``twin.json`` on the same
    inputs."""
    sbml, origin = _model(model)
    text, dorigin = _data(data)
    doc = _native.generic_fit(
        sbml, origin, str(time_unit), text, dorigin, _ids(estimate), _spec(prior), _noise(noise), _plan(doses, "doses")
    )
    return GenericTwin(doc)


def load(path: PathLike) -> GenericTwin:
    """Load a twin saved by :meth:`GenericTwin.save` or by ``medtwin twin fit MODEL.xml`` (its
    format and version are checked, the model recompiled)."""
    p = os.fspath(path)
    return GenericTwin(_native.generic_load(_read(p), p))


def from_json(document: str) -> GenericTwin:
    """A twin from its JSON document (:meth:`GenericTwin.to_json`)."""
    return GenericTwin(_native.generic_load(document, "<twin>"))


def backtest(
    model: PathLike,
    data: DataLike,
    estimate: Union[None, str, Sequence[str]] = None,
    *,
    origins: Sequence[float],
    window: float,
    prior: SpecLike = None,
    noise: NoiseLike = None,
    doses: PlanLike = None,
    time_unit: str = "h",
) -> Dict[str, Any]:
    """Rolling-origin backtest (``medtwin twin backtest MODEL.xml --data … --origins T,… --window
    W``): at each origin a twin is calibrated on the measurements up to it and forecasts those
    in (origin, origin + window]; arguments as :func:`fit`.

    Returns the CLI's metrics JSON as a dict: ``horizon`` (= window), ``origins`` (per origin:
    ``origin``, ``n_calibration``, ``ess``, ``score``) and ``pooled``; a score has ``n``,
    ``rmse`` (of the predictive median; log scale for log-normal observables) and
    ``coverage50``/``coverage80``/``coverage95`` (fractions inside the predictive intervals)."""
    sbml, origin = _model(model)
    text, dorigin = _data(data)
    out = _native.generic_backtest(
        sbml,
        origin,
        str(time_unit),
        text,
        dorigin,
        _ids(estimate),
        [_num("origin", o) for o in origins],
        _num("window", window),
        _spec(prior),
        _noise(noise),
        _plan(doses, "doses"),
    )
    res: Dict[str, Any] = json.loads(out)
    return res


def sepsis() -> Tuple[str, str]:
    """The sepsis twin's model and calibration spec, embedded in the package (README "Any model
    as a twin: the sepsis twin"): ``(sbml, spec)`` — the SBML text of Reynolds et al. 2006's
    acute inflammatory response (J Theor Biol 242:220; BioModels BIOMD0000000714; time in hours)
    and the spec TOML (``P`` and ``k_pg`` estimated; ``Nstar`` and ``D`` observed with 25 %
    log-normal noise; outcome at 1000 h: septic death, aseptic death or healthy).

    >>> sbml, spec = medtwin.twin.generic.sepsis()
    >>> tw = medtwin.twin.generic.fit(sbml, measurements, prior=spec)"""
    sbml, spec = _native.generic_sepsis()
    return sbml, spec


def sepsis_outcome(k_pg: float, p0: float, plan: PlanLike = None) -> str:
    """The outcome class at 1000 h (``"septic death"``, ``"aseptic death"`` or ``"healthy"``) of a
    sepsis patient with pathogen growth rate ``k_pg`` (1/h) and initial pathogen load ``p0``
    (the model's units) under ``plan``: the deterministic truth a twin's outcome probabilities
    can be checked against."""
    return str(_native.generic_sepsis_outcome(_num("k_pg", k_pg), _num("p0", p0), _plan(plan)))
