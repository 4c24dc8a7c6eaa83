"""Type 1 diabetes patient twins on real records (``medtwin twin fit|update|forecast``).

A record is medtwin's long table ``time, kind, value, unit[, insulin]`` (README "The patient record
format": ``time`` RFC 3339 with offset; ``kind`` ``cgm``, ``smbg``, ``bolus``, ``basal_rate``,
``long_acting``, ``carbs``). Give it as a path to the CSV, as a ``pyarrow.Table`` or as a
pandas/polars ``DataFrame`` with those columns.

>>> rec = medtwin.twin.import_t1d_uom("tests/data/t1d-uom", "2313")     # pyarrow.Table
>>> tw = medtwin.twin.fit(rec, until="30h", particles=200)
>>> fc = tw.forecast(240)
>>> fc.table.to_pandas(), fc.p_below_70
>>> out = medtwin.twin.whatif(tw, {"nothing": {}, "bolus": {"bolus": [{"at_min": 0, "units": 2}]}})
>>> out["bolus"].p_below_70, out["bolus"].table.to_pandas()
>>> medtwin.twin.advise(tw, 60)["recommended_bolus_u"]

Twins of any SBML model (``medtwin twin fit MODEL.xml --data …``) are :mod:`medtwin.twin.generic`.

Times (``until``) are minutes after the record's first CGM reading, an offset string such as
``"90m"``, ``"36h"``, ``"5d"``, or an RFC 3339 date-time. Calibration, assimilation and forecasts
release the GIL.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import tempfile
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

from . import _native
from . import generic as generic  # medtwin.twin.generic: twins of any SBML model
from ._native import InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["fit", "backtest", "whatif", "advise", "import_t1d_uom", "read_record", "Twin", "Forecast", "PlanOutcome", "generic"]

RecordLike = Union[str, "os.PathLike[str]", Any]
TimeLike = Union[None, float, int, str]

_OFFSET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d)\s*$")


def _check_time_column(record: Any, mod: str) -> None:
    """A date-time ``time`` column must carry its time zone: a naive one would be written without
    an offset, which the record format (RFC 3339) does not accept, and every row would be dropped."""
    naive = False
    if mod == "pyarrow" and "time" in record.column_names:
        import pyarrow as pa

        t = record.schema.field("time").type
        naive = pa.types.is_timestamp(t) and t.tz is None
    elif mod == "pandas" and "time" in record.columns:
        d = str(record["time"].dtype)  # "datetime64[ns]" naive, "datetime64[ns, UTC]" aware
        naive = d.startswith("datetime64[") and "," not in d
    elif mod == "polars" and "time" in record.columns:
        d = record.schema["time"]
        naive = type(d).__name__ == "Datetime" and getattr(d, "time_zone", None) is None
    if naive:
        raise InputError(
            "the record's 'time' column is a date-time without a time zone: give it one "
            "(pandas: df['time'].dt.tz_localize('UTC'), polars: pl.col('time').dt.replace_time_zone('UTC')) "
            "or RFC 3339 strings with an offset"
        )


class _RecordFile:
    """A path to the record CSV, written to a temporary directory for in-memory tables."""

    def __init__(self, record: RecordLike) -> None:
        self._tmp: Optional[tempfile.TemporaryDirectory[str]] = None
        if isinstance(record, (str, os.PathLike)):
            self.path = os.fspath(record)
            return
        mod = type(record).__module__.split(".")[0]
        if mod in ("pyarrow", "pandas", "polars"):
            _check_time_column(record, mod)
        self._tmp = tempfile.TemporaryDirectory(prefix="medtwin-record-")
        self.path = os.path.join(self._tmp.name, "record.csv")
        if mod == "pyarrow":
            import pyarrow.csv as pacsv

            pacsv.write_csv(record, self.path)
        elif mod == "pandas":
            record.to_csv(self.path, index=False)
        elif mod == "polars":
            record.write_csv(self.path)
        else:
            self._tmp.cleanup()
            raise TypeError(
                f"a record must be a path, a pyarrow.Table or a pandas/polars DataFrame, not {type(record).__name__}"
            )

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc: Any) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _minutes(until: TimeLike, record_path: str) -> Optional[float]:
    if until is None:
        return None
    if isinstance(until, (int, float)) and not isinstance(until, bool):
        return float(until)
    if isinstance(until, str):
        m = _OFFSET.match(until)
        if m:
            v = float(m.group(1))
            return v * {"m": 1.0, "min": 1.0, "h": 60.0, "d": 1440.0}[m.group(2)]
        try:
            t = _dt.datetime.fromisoformat(until.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InputError(
                f"until '{until}': expected minutes, an offset such as 90m/36h/5d, or an RFC 3339 date-time"
            ) from None
        if t.tzinfo is None:
            raise InputError(f"until '{until}': an RFC 3339 date-time needs an explicit offset")
        _, origin = _native.twin_record_span(record_path)
        o = _dt.datetime.fromisoformat(origin.replace("Z", "+00:00"))
        return (t - o).total_seconds() / 60.0
    raise TypeError(f"until must be minutes, an offset string or an RFC 3339 string, not {type(until).__name__}")


def read_record(path: Union[str, "os.PathLike[str]"]) -> "pa.Table":
    """Read a record CSV as a ``pyarrow.Table`` (``time`` string, ``kind``, ``value`` float64,
    ``unit``, ``insulin``)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return pacsv.read_csv(
        os.fspath(path),
        convert_options=pacsv.ConvertOptions(
            column_types={"time": pa.string(), "kind": pa.string(), "value": pa.float64(), "unit": pa.string(), "insulin": pa.string()},
            strings_can_be_null=True,
        ),
    )


def import_t1d_uom(directory: Union[str, "os.PathLike[str]"], participant: str) -> "pa.Table":
    """Import one participant of the T1D-UOM study (its folder layout, as ``medtwin import
    t1d-uom``) into medtwin's record format, as a ``pyarrow.Table`` (see :func:`read_record`)."""
    with tempfile.TemporaryDirectory(prefix="medtwin-import-") as d:
        out = os.path.join(d, "record.csv")
        _native.twin_import_t1d_uom(os.fspath(directory), participant, out)
        return read_record(out)


class Forecast:
    """A forecast from a twin's time: :attr:`table` and the event probabilities."""

    def __init__(self, table: "pa.Table", p_below_70: float, p_above_250: float, twin_t_min: float, origin: str) -> None:
        #: ``horizon`` rows: ``t_min`` (minutes after the twin's time, 1..horizon), ``median_mg_dl``
        #: and the 50/80/95 % band limits ``lo50_mg_dl`` … ``hi95_mg_dl`` (mg/dL).
        self.table = table
        #: P(glucose < 70 mg/dL within the horizon).
        self.p_below_70 = p_below_70
        #: P(glucose > 250 mg/dL within the horizon).
        self.p_above_250 = p_above_250
        #: The twin's time, minutes after the record's first CGM reading.
        self.twin_t_min = twin_t_min
        #: The record's origin (RFC 3339).
        self.origin = origin

    def __repr__(self) -> str:
        return f"<Forecast {self.table.num_rows} min: P(<70) {self.p_below_70:.3f}, P(>250) {self.p_above_250:.3f}>"


class Twin:
    """A calibrated twin with its particle posterior (the CLI's ``twin.json``)."""

    def __init__(self, document: str, calibration: Optional[Dict[str, Any]] = None) -> None:
        import json

        self._doc = document
        try:
            meta = json.loads(document)
            #: Minutes after the record's first CGM reading up to which data are assimilated.
            self.t_min: float = float(meta["t_min"])
            #: Patient id of the record, if any.
            self.patient_id: Optional[str] = meta.get("patient_id")
            #: Number of particles.
            self.n_particles: int = len(meta["particles"])
            #: MAP calibration summary (``rmse_mg_dl``, ``prior_rmse_mg_dl``, ``converged``,
            #: ``insulin_scale``, ``diagnostics``).
            self.calibration: Dict[str, Any] = calibration if calibration is not None else {
                k: meta["calibration"].get(k)
                for k in ("rmse_mg_dl", "prior_rmse_mg_dl", "converged", "insulin_scale", "diagnostics")
            }
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"twin document: not a medtwin T1D twin ({type(e).__name__}: {e})") from None

    def __repr__(self) -> str:
        return f"<medtwin.twin.Twin patient={self.patient_id!r} t={self.t_min:.0f} min, {self.n_particles} particles>"

    def to_json(self) -> str:
        """The twin document (``medtwin twin forecast twin.json`` reads it)."""
        return self._doc

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self._doc)

    @staticmethod
    def load(path: Union[str, "os.PathLike[str]"]) -> "Twin":
        """Load a twin saved by :meth:`save` or by ``medtwin twin fit``."""
        with open(path, encoding="utf-8") as f:
            return Twin(f.read())

    def update(self, record: RecordLike, until: TimeLike = None) -> "Twin":
        """Assimilate newer readings of the same patient's full record up to ``until`` (default:
        its last CGM reading); returns the updated twin (this one is unchanged)."""
        with _RecordFile(record) as p:
            return Twin(_native.twin_update(self._doc, p, _minutes(until, p)))

    def forecast(self, horizon: int = 240) -> Forecast:
        """Probabilistic forecast from the twin's time, ``horizon`` minutes (1–720), knowing no
        future meals or boluses (the basal in force continues); hybrid forecasts as the CLI's."""
        import pyarrow as pa

        from . import _arrow

        d = _native.twin_forecast(self._doc, int(horizon))
        cols = ["t_min", "median_mg_dl", "lo50_mg_dl", "hi50_mg_dl", "lo80_mg_dl", "hi80_mg_dl", "lo95_mg_dl", "hi95_mg_dl"]
        table = pa.table({c: _arrow.f64(d[c]) for c in cols})
        return Forecast(table, d["p_below_70"], d["p_above_250"], d["twin_t_min"], d["origin"])

    def whatif(self, plans: Dict[str, "PlanLike"], horizon_min: int = 240, seed: Optional[int] = None) -> Dict[str, "PlanOutcome"]:
        """:func:`whatif` on this twin."""
        return whatif(self, plans, horizon_min, seed)

    def advise(
        self, carbs_g: float, at_min: float = 0.0, cr: Optional[float] = None, cf: Optional[float] = None, target: float = 120.0
    ) -> Dict[str, Any]:
        """:func:`advise` on this twin."""
        return advise(self, carbs_g, at_min, cr, cf, target)


PlanLike = Union[str, Dict[str, Any]]

_BAND_COLS = ["t_min", "median_mg_dl", "lo50_mg_dl", "hi50_mg_dl", "lo80_mg_dl", "hi80_mg_dl", "lo95_mg_dl", "hi95_mg_dl"]


class PlanOutcome:
    """The outcome distribution of one what-if plan (``medtwin twin whatif``'s ``summary.csv``
    row and ``<plan>.csv``)."""

    def __init__(self, d: Dict[str, Any]) -> None:
        import pyarrow as pa

        from . import _arrow

        #: Plan name (the key of the ``plans`` dict).
        self.name: str = d["name"]
        #: ``horizon_min`` rows: ``t_min`` (minutes after the twin's time, 1..horizon),
        #: ``median_mg_dl`` and the 50/80/95 % band limits ``lo50_mg_dl`` … ``hi95_mg_dl`` (mg/dL).
        self.table: "pa.Table" = pa.table({c: _arrow.f64(d[c]) for c in _BAND_COLS})
        #: P(CGM < 70 mg/dL at any time within the horizon).
        self.p_below_70: float = d["p_below_70"]
        #: P(CGM < 54 mg/dL within the horizon).
        self.p_below_54: float = d["p_below_54"]
        #: P(CGM > 250 mg/dL within the horizon).
        self.p_above_250: float = d["p_above_250"]
        #: Expected % of the horizon in 70–180 mg/dL.
        self.expected_tir_pct: float = d["expected_tir_pct"]
        #: Expected Kovatchev risk index (LBGI + HBGI averaged over the path).
        self.expected_risk_index: float = d["expected_risk_index"]

    def __repr__(self) -> str:
        return (
            f"<PlanOutcome {self.name!r}: P(<70) {self.p_below_70:.3f}, P(<54) {self.p_below_54:.3f}, "
            f"P(>250) {self.p_above_250:.3f}, E[TIR] {self.expected_tir_pct:.1f} %, E[risk] {self.expected_risk_index:.2f}>"
        )


def _twin_doc(twin: Union[Twin, str, "os.PathLike[str]"]) -> str:
    if isinstance(twin, Twin):
        return twin.to_json()
    if isinstance(twin, os.PathLike) or (isinstance(twin, str) and not twin.lstrip().startswith("{")):
        with open(twin, encoding="utf-8") as f:
            return f.read()
    if isinstance(twin, str):
        return twin
    raise TypeError(f"twin must be a medtwin.twin.Twin, a twin JSON document or its path, not {type(twin).__name__}")


def whatif(
    twin: Union[Twin, str, "os.PathLike[str]"],
    plans: Dict[str, PlanLike],
    horizon_min: int = 240,
    seed: Optional[int] = None,
) -> Dict[str, PlanOutcome]:
    """Compare plans on a twin (``medtwin twin whatif``): each plan is simulated over
    ``horizon_min`` minutes (1–720) from the twin's time on the same posterior ensemble with
    common random numbers (``seed``; default: the twin's seed, as the CLI), so differences are
    the plans', not Monte-Carlo noise.

    ``twin``: a :class:`Twin`, its JSON document or a path to ``twin.json``. ``plans``: name →
    a dict or a TOML string of the CLI's plan format — ``meal = [{at_min, carbs_g}]``,
    ``bolus = [{at_min, units}]``, ``basal = [{at_min, u_per_h}]`` (minutes after the twin's
    time, within the horizon; g, U, U/h); an empty plan is "no action".

    Returns name → :class:`PlanOutcome` (in the order given). Raises
    :class:`medtwin.InputError` for a bad plan or horizon, and for a plan with a bolus or basal on
    a twin whose record holds no insulin (the CLI's refusal, same text). Releases the GIL."""
    import json

    if not isinstance(plans, dict) or not plans:
        raise InputError("plans must be a non-empty dict of name -> plan dict or TOML string")
    native = []
    for name, plan in plans.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"plan names must be non-empty strings, not {name!r}")
        if isinstance(plan, str):
            native.append((name, plan, False))
        elif isinstance(plan, dict):
            native.append((name, json.dumps(plan), True))
        else:
            raise TypeError(f"plan '{name}' must be a dict or a TOML string, not {type(plan).__name__}")
    if isinstance(horizon_min, bool) or int(horizon_min) != horizon_min or not 1 <= horizon_min <= 720:
        raise InputError(f"horizon_min {horizon_min} must be a whole number of minutes in 1..=720")
    if seed is not None and (isinstance(seed, bool) or int(seed) != seed or seed < 0):
        raise InputError(f"seed {seed} must be a non-negative integer")
    out = _native.twin_whatif(_twin_doc(twin), native, int(horizon_min), None if seed is None else int(seed))
    return {d["name"]: PlanOutcome(d) for d in out}


def advise(
    twin: Union[Twin, str, "os.PathLike[str]"],
    carbs_g: float,
    at_min: float = 0.0,
    cr: Optional[float] = None,
    cf: Optional[float] = None,
    target: float = 120.0,
) -> Dict[str, Any]:
    """Recommend a meal bolus under the twin's uncertainty, beside the standard calculator
    (``medtwin twin advise --json``; same dict).

    ``carbs_g`` (0, 300] g eaten ``at_min`` (0–240) minutes after the twin's time; ``cr`` g/U
    and ``cf`` mg/dL per U (default 500/TDI and 1800/TDI of the calibration window); ``target``
    70–200 mg/dL. Keys: ``recommended_bolus_u``, ``standard_bolus_u`` (U), ``reason`` (str),
    ``refusal`` (str or None), ``dose_range_u`` ([lo, hi] U), ``constraint_met``,
    ``recommended`` and ``standard`` (outcomes: ``p_below_70``, ``p_below_54``, ``p_above_250``,
    ``expected_tir_pct``, ``expected_risk_index``, ``t_min``, ``bands``), ``p_below_70_no_bolus``,
    ``iob_u``, ``cgm_mg_dl``, ``cgm_trend_mg_dl_per_min``, ``carbs_g``, ``at_min`` (minutes from
    the record origin), ``settings``, ``candidates`` ([bolus U, expected risk, P(<70)]). For
    convenience ``p_below_70`` is the recommended dose's P(<70 mg/dL).

    Raises :class:`medtwin.InputError` for bad arguments and on a twin whose record holds no
    insulin (the CLI's refusal, same text). Releases the GIL."""
    import json

    def num(name: str, v: Any) -> Optional[float]:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a number, not {type(v).__name__}")
        return float(v)

    c, a, t = num("carbs_g", carbs_g), num("at_min", at_min), num("target", target)
    assert c is not None and a is not None and t is not None
    res: Dict[str, Any] = json.loads(_native.twin_advise(_twin_doc(twin), c, a, num("cr", cr), num("cf", cf), t))
    res["p_below_70"] = res["recommended"]["p_below_70"]
    return res


def fit(record: RecordLike, until: TimeLike = None, *, particles: int = 500, seed: int = 1) -> Twin:
    """Calibrate a twin (MAP with the population prior on the first 24 h, Laplace covariance) and
    assimilate every CGM reading up to ``until`` (default: the record's last) with a particle
    filter of ``particles`` particles (``medtwin twin fit``). Needs at least 24 h of data.

    Raises :class:`medtwin.InputError` (bad record, too little data) or
    :class:`medtwin.SimulationError` (calibration or inference failed)."""
    with _RecordFile(record) as p:
        doc, cal = _native.twin_fit(p, _minutes(until, p), int(particles), int(seed))
    return Twin(doc, cal)


def backtest(
    record: RecordLike,
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    origin_every_min: float = 60.0,
    horizons: "tuple[int, ...]" = (30, 60, 120),
    particles: int = 500,
    future_inputs: str = "blind",
) -> Dict[str, Any]:
    """Rolling-origin backtest (``medtwin twin backtest``; the scores ``medtwin demo`` prints): a
    twin calibrated on the first 24 h, then a forecast every ``origin_every_min`` minutes between
    ``start`` and ``end`` (as ``until`` in :func:`fit`; default: the whole record after the
    warm-up), scored against the recorded CGM at each horizon (minutes) beside persistence (the
    last CGM reading). ``future_inputs="recorded"``: replay validation (the forecasts are told
    the recorded meals, boluses and basal changes).

    Returns ``metrics.json`` as a dict: ``horizons[str(minutes)]`` with ``rmse_mg_dl``,
    ``persistence_rmse_mg_dl``, ``mae_mg_dl``, ``coverage_80``, ``coverage_95``,
    ``mean_width_80_mg_dl``, ``bias_mg_dl``, ``n``; ``horizons_with_inputs``, ``risk`` (Brier
    scores), ``n_origins``, ``wall_s``. Releases the GIL."""
    import json

    if future_inputs not in ("blind", "recorded"):
        raise ValueError("future_inputs must be 'blind' or 'recorded'")
    with _RecordFile(record) as p:
        s = _minutes(start, p)
        out = _native.twin_backtest(
            p,
            0.0 if s is None else s,
            _minutes(end, p),
            float(origin_every_min),
            [int(h) for h in horizons],
            int(particles),
            future_inputs == "recorded",
        )
    res: Dict[str, Any] = json.loads(out)
    return res
