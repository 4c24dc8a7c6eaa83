"""Pharmacokinetics on NONMEM-style event tables (``medtwin pk``): NCA and FOCE-I population fits.

Data are event tables with columns ``ID, TIME, AMT, RATE, II, ADDL, SS, CMT, EVID, MDV, DV`` plus
numeric covariate columns (time in h; ``ID``, ``TIME`` and ``DV`` required; see the README's
"Pharmacokinetics" section). Give a table as a path to a CSV file, as CSV text, as a
``pyarrow.Table`` or as a pandas ``DataFrame``; units default to amount ``mg`` and concentration
``mg/L`` (a ``# units: amount=mg/kg concentration=mg/L`` comment line in the CSV sets them).

>>> data = medtwin.pk.import_r("theoph", "tests/data/pk/Theoph.csv")   # CSV text
>>> medtwin.pk.nca(data).to_pandas()
>>> f = medtwin.pk.fit(data, model="1cpt-oral", parameters=["KE", "KA", "CL"], iiv=["KA", "CL"])
>>> f.log_likelihood, f.theta
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _native

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["nca", "fit", "import_r", "read_table", "PopulationFit", "NCA_COLUMNS"]

TableLike = Union[str, "os.PathLike[str]", Any]

#: Columns of :func:`nca` after ``id`` (units: h, the data set's concentration unit C and amount unit A).
NCA_COLUMNS = [
    "cmax", "tmax_h", "clast", "tlast_h", "c0", "auc_last", "aumc_last", "lambda_z_per_h",
    "t_half_h", "r2_adj", "n_lambda_z", "lambda_z_first_h", "auc_inf", "aumc_inf",
    "auc_pct_extrapolated", "cl_f_l_per_h", "vz_f_l",
]


def _table_text(data: TableLike) -> Tuple[str, str]:
    """(CSV text, source name) of an event table given in any accepted form."""
    if isinstance(data, os.PathLike) or (isinstance(data, str) and "\n" not in data and "," not in data):
        path = os.fspath(data)
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    if isinstance(data, str):
        return data, "<string>"
    mod = type(data).__module__.split(".")[0]
    if mod == "pyarrow":
        import io

        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(data, buf, pacsv.WriteOptions(quoting_style="none"))
        return buf.getvalue().decode(), "<pyarrow.Table>"
    if mod == "pandas":
        return data.to_csv(index=False), "<DataFrame>"
    if mod == "polars":
        return data.write_csv(), "<polars.DataFrame>"
    raise TypeError(
        f"an event table must be a path, CSV text, a pyarrow.Table or a pandas/polars DataFrame, not {type(data).__name__}"
    )


def read_table(data: TableLike) -> Dict[str, Any]:
    """Validate an event table: ``{"csv": normalised CSV text, "subjects": n, "observations": n,
    "doses": n}``. Bad rows raise :class:`medtwin.InputError` naming ``source:line: reason`` (all
    bad rows together)."""
    text, source = _table_text(data)
    csv, ns, no, nd = _native.pk_check_table(text, source)
    return {"csv": csv, "subjects": ns, "observations": no, "doses": nd}


def import_r(kind: str, path: Union[str, "os.PathLike[str]"]) -> str:
    """Convert one of R's PK data sets (``"theoph"``, ``"phenobarb"``, ``"indometh"``, as the
    Rdatasets CSV) into event-table CSV text (``medtwin pk import``)."""
    return _native.pk_import_r(kind, os.fspath(path))


def nca(data: TableLike, route: str = "extravascular", *, infusion_h: Optional[float] = None) -> "pa.Table":
    """Non-compartmental analysis of every subject with a single dose (``medtwin pk nca``).

    AUC by linear-up/log-down trapezoids, λz by the best adjusted R² over the last ≥ 3 points
    after Cmax (Cmax excluded for extravascular doses), as PKNCA does.

    Parameters
    ----------
    data:
        Event table (path, CSV text, ``pyarrow.Table`` or pandas/polars ``DataFrame``).
    route:
        ``"extravascular"`` (oral; C(0) = 0), ``"iv-bolus"`` (C0 back-extrapolated) or
        ``"infusion"`` (with ``infusion_h``, the duration in hours).

    Returns
    -------
    pyarrow.Table
        One row per subject: ``id`` (string), then :data:`NCA_COLUMNS` — ``cmax`` (C),
        ``tmax_h``, ``clast`` (C), ``tlast_h``, ``c0`` (C, IV bolus only), ``auc_last`` (C·h),
        ``aumc_last`` (C·h²), ``lambda_z_per_h`` (1/h), ``t_half_h``, ``r2_adj``,
        ``n_lambda_z``, ``lambda_z_first_h``, ``auc_inf`` (C·h), ``aumc_inf`` (C·h²),
        ``auc_pct_extrapolated`` (%), ``cl_f_l_per_h`` (dose/AUCinf: CL or CL/F, L/h when C is
        amount/L) and ``vz_f_l`` (Vz or Vz/F, L) — null where undefined (no λz) — and
        ``error`` (null, or why the subject has no NCA, e.g. several doses). The schema's
        metadata carry the units (``amount``, ``concentration``).
    """
    import pyarrow as pa

    text, source = _table_text(data)
    out = json.loads(_native.pk_nca(text, source, route, infusion_h))
    cols: Dict[str, List[Any]] = {"id": []}
    for c in NCA_COLUMNS:
        cols[c] = []
    cols["error"] = []
    for s in out["subjects"]:
        cols["id"].append(s["id"])
        r = s.get("result") or {}
        for c in NCA_COLUMNS:
            cols[c].append(r.get(c))
        cols["error"].append(s.get("error"))
    fields = [pa.field("id", pa.string())]
    for c in NCA_COLUMNS:
        fields.append(pa.field(c, pa.int64() if c == "n_lambda_z" else pa.float64()))
    fields.append(pa.field("error", pa.string()))
    schema = pa.schema(fields, metadata={k: str(v) for k, v in out["units"].items()})
    return pa.table(cols, schema=schema)


class PopulationFit:
    """Result of :func:`fit` (the JSON of ``medtwin pk fit --out`` is :attr:`raw`)."""

    def __init__(self, raw: Dict[str, Any], units: Dict[str, str], model: str = "") -> None:
        self.raw = raw
        #: ``{"amount": ..., "concentration": ...}`` of the data set.
        self.units = units
        #: The structural model's name as given to :func:`fit`.
        self.model = model

    @property
    def ofv(self) -> float:
        """Objective function value, −2 log-likelihood."""
        return float(self.raw["ofv"])

    @property
    def log_likelihood(self) -> float:
        """FOCE-I log-likelihood at the estimates."""
        return float(self.raw["log_likelihood"])

    @property
    def converged(self) -> bool:
        return bool(self.raw["converged"])

    @property
    def wall_s(self) -> float:
        """Wall time of the fit, s."""
        return float(self.raw["wall_s"])

    @property
    def parameters(self) -> List[str]:
        """Estimated structural parameters (NONMEM names, e.g. ``CL``, ``V``, ``KA``)."""
        return list(self.raw["model"]["parameters"])

    @property
    def log_theta(self) -> Dict[str, float]:
        """Typical values on the log scale (at covariate reference values)."""
        return dict(zip(self.parameters, self.raw["estimates"]["log_theta"]))

    @property
    def theta(self) -> Dict[str, float]:
        """Typical values on the natural scale (h, L, L/h with the data set's units)."""
        import math

        return {k: math.exp(v) for k, v in self.log_theta.items()}

    @property
    def omega(self) -> List[List[float]]:
        """Ω (variances of η, log scale), ``n_eta × n_eta``, in the order of :attr:`iiv`."""
        om = self.raw["estimates"]["omega"]
        k = len(self.iiv)
        return [om[i * k:(i + 1) * k] for i in range(k)]

    @property
    def iiv(self) -> List[str]:
        """Parameters with inter-individual variability."""
        return list(self.raw["model"]["iiv"])

    @property
    def sigma_add(self) -> float:
        """Additive residual SD (concentration unit); 0 when not in the model."""
        return float(self.raw["estimates"]["sigma_add"])

    @property
    def sigma_prop(self) -> float:
        """Proportional residual SD (fraction); 0 when not in the model."""
        return float(self.raw["estimates"]["sigma_prop"])

    @property
    def standard_errors(self) -> Optional[Dict[str, Tuple[float, float]]]:
        """``{coordinate: (estimate, SE)}`` on the optimiser's scale (``log_CL``, ``log_sd_eta_KA``,
        ``log_sigma_add``, …), or None when the Hessian is not positive definite."""
        se = self.raw.get("standard_errors")
        return None if se is None else {n: (e, s) for n, e, s in se}

    def predictions(self) -> "pa.Table":
        """Per-observation diagnostics as a ``pyarrow.Table``: ``id``, ``time_h``, ``dv``,
        ``pred`` (η = 0), ``ipred`` (η̂), ``iwres``, ``cwres``."""
        import pyarrow as pa

        cols: Dict[str, List[Any]] = {k: [] for k in ("id", "time_h", "dv", "pred", "ipred", "iwres", "cwres")}
        for ind in self.raw["individuals"]:
            n = len(ind["time_h"])
            cols["id"].extend([ind["id"]] * n)
            for k in ("time_h", "dv", "pred", "ipred", "iwres", "cwres"):
                cols[k].extend(ind[k])
        return pa.table(cols)

    def individual_parameters(self) -> "pa.Table":
        """Each subject's parameters at η̂ (natural scale) as a ``pyarrow.Table``: ``id`` then one
        column per parameter."""
        import pyarrow as pa

        inds = self.raw["individuals"]
        names = [n for n, _ in inds[0]["parameters"]] if inds else []
        cols: Dict[str, List[Any]] = {"id": [i["id"] for i in inds]}
        for j, n in enumerate(names):
            cols[n] = [i["parameters"][j][1] for i in inds]
        return pa.table(cols)

    def to_json(self) -> str:
        """The fit as ``medtwin pk fit --out`` writes it (loadable by ``medtwin pk twin``)."""
        return json.dumps(self.raw)

    def __repr__(self) -> str:
        th = ", ".join(f"{k}={v:.4g}" for k, v in self.theta.items())
        return f"<PopulationFit {self.model}: logLik {self.log_likelihood:.3f}, {th}>"


def fit(
    data: TableLike,
    model: str = "1cpt-oral",
    *,
    parameters: Sequence[str] = (),
    iiv: Sequence[str] = (),
    covariates: Sequence[str] = (),
    error: str = "additive",
    full_omega: bool = False,
    standard_errors: bool = True,
) -> PopulationFit:
    """FOCE-I population fit (``medtwin pk fit``); the GIL is released while it runs.

    Parameters
    ----------
    data:
        Event table (path, CSV text, ``pyarrow.Table`` or pandas/polars ``DataFrame``).
    model:
        Structural model, e.g. ``"1cpt-oral"``, ``"1cpt-iv"``, ``"2cpt-oral"``.
    parameters:
        Estimated parameters (NONMEM names; default the model's, e.g. CL, V, KA; ``KE`` may
        replace ``V`` as in nlme's ``SSfol``).
    iiv:
        Parameters with inter-individual variability (default: all estimated).
    covariates:
        Effects such as ``"CL~WT"`` (power), ``"V~WT:lin"``, ``"CL~SEX:cat"``.
    error:
        ``"additive"``, ``"proportional"`` or ``"combined"``.

    Raises :class:`medtwin.InputError` for a bad table or specification and
    :class:`medtwin.SimulationError` when the fit cannot start.
    """
    text, source = _table_text(data)
    out = json.loads(
        _native.pk_fit(
            text, source, model, list(parameters), list(iiv), list(covariates), error, full_omega, standard_errors
        )
    )
    return PopulationFit(out["fit"], out["units"], model)
