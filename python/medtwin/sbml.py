"""Any model via SBML (Levels 2–3 core, ``comp`` flattened): load, inspect, change values, simulate.

>>> m = medtwin.sbml.load("model.xml")
>>> m.set("ka", 1.5)
>>> table = m.simulate(24.0, 97)          # 0..24 model time units, 97 output rows

Times are in the model's own time unit (SBML ``timeUnits``; the engine does not convert).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Sequence, Tuple, Union

from . import _native

if TYPE_CHECKING:
    import pyarrow as pa
from ._native import InputError

__all__ = ["load", "Model"]


class Model:
    """A compiled SBML model. Obtain one with :func:`load`.

    Values set with :meth:`set` apply to this object only (use :meth:`copy` to branch)."""

    def __init__(self, native: _native.NativeSbmlModel, source: str) -> None:
        self._m = native
        self.source = source

    def __repr__(self) -> str:
        return f"<medtwin.sbml.Model {self.source!r}: {len(self.species)} species, {len(self.parameters)} parameters>"

    @property
    def species(self) -> List[str]:
        """Species ids in document order."""
        return self._m.species_ids()

    @property
    def parameters(self) -> List[str]:
        """Ids of the constant global parameters (what a calibration may estimate)."""
        return self._m.parameter_ids()

    @property
    def variables(self) -> List[str]:
        """Columns reported by default: species, then non-constant compartments and parameters."""
        return self._m.default_variables()

    def get(self, id: str) -> float:
        """Value of a parameter, compartment or species (species: in the unit of its symbol,
        a concentration unless ``hasOnlySubstanceUnits``) at the initial time.
        Raises :class:`InputError` for an unknown id."""
        v = self._m.value(id)
        if v is None:
            raise InputError(f"unknown id '{id}': no such parameter, compartment or species")
        return v

    def set(self, id: str, value: float) -> "Model":
        """Set a parameter, compartment or species initial value and recompute what derives from
        it (initial assignments, rules). Refuses ids set by an assignment. Returns ``self``."""
        self._m.set_value(id, float(value))
        return self

    def copy(self) -> "Model":
        """An independent copy (values set on it do not affect this model)."""
        return Model(self._m.copy(), self.source)

    def info(self) -> str:
        """Human-readable summary (``medtwin sbml info``)."""
        return self._m.info()

    def simulate(
        self,
        t_end: float,
        n_points: int = 101,
        *,
        t_start: float = 0.0,
        times: Optional[Sequence[float]] = None,
        variables: Optional[Sequence[str]] = None,
        amount: Iterable[str] = (),
        concentration: Iterable[str] = (),
        doses: Iterable[Tuple[float, str, float]] = (),
        rtol: Optional[float] = None,
        atol: Optional[float] = None,
        method: str = "auto",
        max_step: Optional[float] = None,
    ) -> "pa.Table":
        """Simulate a time course.

        Parameters
        ----------
        t_end, n_points, t_start:
            Output on the uniform grid of ``n_points`` times from ``t_start`` to ``t_end``
            (model time units; ``n_points >= 2``).
        times:
            Output at these times instead (sorted, each ``>= t_start``); ``t_end`` and
            ``n_points`` are then ignored.
        variables:
            Column ids after ``time`` (default: :attr:`variables`).
        amount, concentration:
            Species reported as amounts / as concentrations.
        doses:
            ``(time, state_id, amount)`` boluses: the state (a species' amount) jumps by
            ``amount`` at ``time``. At a time that is also an output time the row is recorded
            before the dose (a level at dose time is a trough).
        rtol, atol:
            Integrator tolerances (default 1e-10 and 1e-12; ``atol`` is scaled per state as
            libRoadRunner scales CVODE's).
        method:
            ``"auto"`` (DOPRI5, switching to BDF when stiff), ``"explicit"``, ``"stiff"`` or
            ``"rosenbrock"``.
        max_step:
            Largest integration step (model time units), for short pulses.

        Returns
        -------
        pyarrow.Table
            ``n_points`` (or ``len(times)``) rows; float64 columns ``time`` and one per variable.

        Raises
        ------
        InputError
            Bad options, an unknown id, a dose into a non-state.
        SimulationError
            The integration failed.
        """
        import pyarrow as pa

        from . import _arrow

        if times is None and (not isinstance(n_points, int) or n_points < 2):
            raise InputError(f"n_points must be an integer >= 2, got {n_points!r}")
        ts = [float(t) for t in times] if times is not None else None
        header, cols = self._m.simulate(
            float(t_start),
            float(t_end) if times is None else (max(ts) if ts else float(t_start)),
            (n_points - 1) if times is None else 1,
            list(variables) if variables is not None else None,
            list(amount),
            list(concentration),
            rtol,
            atol,
            method,
            max_step,
            ts,
            [(float(t), str(s), float(a)) for (t, s, a) in doses],
        )
        return pa.table({h: _arrow.f64(c) for h, c in zip(header, cols)})


def load(source: Union[str, "os.PathLike[str]"]) -> Model:
    """Load and compile an SBML model from a path or from the XML text itself.

    A string starting with ``<`` (after white space) is taken as the document; anything else as
    a path. Raises :class:`medtwin.SbmlError` (unreadable file, XML error, invalid SBML) or
    :class:`medtwin.UnsupportedError` (a construct the importer does not simulate)."""
    if isinstance(source, str) and source.lstrip().startswith("<"):
        return Model(_native.NativeSbmlModel.from_text(source), "<string>")
    path = os.fspath(source)
    return Model(_native.NativeSbmlModel.from_file(path), path)
