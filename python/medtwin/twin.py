"""Type 1 diabetes patient twins on real records (``medtwin twin fit|update|forecast``).

A record is medtwin's long table ``time, kind, value, unit[, insulin]`` (README "The patient record
format": ``time`` RFC 3339 with offset; ``kind`` ``cgm``, ``smbg``, ``bolus``, ``basal_rate``,
``long_acting``, ``carbs``). Give it as a path to the CSV, as a ``pyarrow.Table`` or as a
pandas/polars ``DataFrame`` with those columns.

>>> rec = medtwin.twin.import_t1d_uom("tests/data/t1d-uom", "2313")     # pyarrow.Table
>>> tw = medtwin.twin.fit(rec, until="30h", particles=200)
>>> fc = tw.forecast(240)
>>> fc.table.to_pandas(), fc.p_below_70

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
from ._native import InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["fit", "backtest", "import_t1d_uom", "read_record", "Twin", "Forecast"]

RecordLike = Union[str, "os.PathLike[str]", Any]
TimeLike = Union[None, float, int, str]

_OFFSET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d)\s*$")


class _RecordFile:
    """A path to the record CSV, written to a temporary directory for in-memory tables."""

    def __init__(self, record: RecordLike) -> None:
        self._tmp: Optional[tempfile.TemporaryDirectory[str]] = None
        if isinstance(record, (str, os.PathLike)):
            self.path = os.fspath(record)
            return
        mod = type(record).__module__.split(".")[0]
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
