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
>>> tw = medtwin.pk.twin(f, data, id="1")                              # TDM twin of subject 1
>>> tw.recommend(target="trough", value=5.0, interval_h=12)["dose"]     # medtwin pk recommend
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _native

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["nca", "fit", "twin", "import_r", "read_table", "PopulationFit", "TdmTwin", "NCA_COLUMNS"]

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


class TdmTwin:
    """A patient's PK twin for therapeutic drug monitoring (``medtwin pk twin``'s JSON): the
    posterior of the individual parameters (weighted importance samples) given their levels, with
    the population fit as prior."""

    def __init__(self, document: str, map_parameters: Optional[Dict[str, float]] = None, n_levels: Optional[int] = None) -> None:
        params, n_samples, ess = _native.pk_twin_info(document)  # validates the document
        self._doc = document
        #: Individual structural parameters at the MAP (``CL`` L/h, ``V`` L, ``KA``/``KE`` 1/h, …).
        self.map_parameters: Dict[str, float] = map_parameters if map_parameters is not None else dict(params)
        #: Posterior samples and their effective sample size.
        self.n_samples: int = n_samples
        self.ess: float = ess
        #: Levels the posterior was conditioned on (None for a loaded twin).
        self.n_levels: Optional[int] = n_levels

    def __repr__(self) -> str:
        p = ", ".join(f"{k} {v:.4g}" for k, v in self.map_parameters.items())
        return f"<medtwin.pk.TdmTwin MAP {p}; {self.n_samples} samples, ESS {self.ess:.0f}>"

    def to_json(self) -> str:
        """The twin document (``medtwin pk recommend --twin`` reads it)."""
        return self._doc

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self._doc)

    @staticmethod
    def load(path: Union[str, "os.PathLike[str]"]) -> "TdmTwin":
        """Load a twin saved by :meth:`save` or by ``medtwin pk twin``."""
        with open(path, encoding="utf-8") as f:
            return TdmTwin(f.read())

    def recommend(
        self,
        target: str = "trough",
        value: float = 0.0,
        interval_h: Optional[float] = None,
        *,
        cmt: int = 1,
        infusion_h: float = 0.0,
        toxic: Optional[float] = None,
        max_risk: float = 0.1,
        round_to: float = 0.0,
    ) -> Dict[str, Any]:
        """Dose per interval meeting a steady-state ``target`` (``"trough"`` or ``"cmax"``:
        ``value`` in the data's concentration unit; ``"auc"``: concentration × h over one
        interval) with the MAP parameters, and its risk under the posterior (``medtwin pk
        recommend --json``; same dict).

        ``interval_h`` (h): the dosing interval; None tries 4, 6, 8, 12, 24, 48, 72 h and keeps the
        longest whose dose passes the toxicity constraint (the outcome at each is under
        ``"tried"``: ``[(tau_h, recommendation dict or None, refusal text or None)]``). ``cmt``:
        dosing compartment (NONMEM CMT); ``infusion_h``: infusion duration (0 = bolus);
        ``toxic``: peak threshold (concentration unit) with ``max_risk`` the largest acceptable
        P(Cmax,ss > toxic); ``round_to``: dose increment (0 = exact).

        Keys: ``dose`` (amount unit per interval), ``interval_h``, ``map_trough``, ``map_cmax``,
        ``map_auc``, ``trough_pi80`` ([lo, hi]), ``p_toxic`` and ``p_target`` (P(trough within
        ±20 % of a trough target); None when not applicable).

        Raises :class:`medtwin.RefusedError` when no dose meets the target within the
        constraint (the reason in the message) and :class:`medtwin.InputError` for a bad
        request. Releases the GIL."""
        r, tried = _native.pk_recommend(
            self._doc,
            str(target),
            float(value),
            None if interval_h is None else float(interval_h),
            int(cmt),
            float(infusion_h),
            None if toxic is None else float(toxic),
            float(max_risk),
            float(round_to),
        )
        out: Dict[str, Any] = json.loads(r)
        if interval_h is None:
            out["tried"] = [(tau, None if o is None else json.loads(o), e) for tau, o, e in tried]
        return out


def twin(pop: Union[PopulationFit, str, "os.PathLike[str]"], data: TableLike, id: Union[str, int]) -> TdmTwin:
    """Individualise a TDM twin (``medtwin pk twin``): the posterior of subject ``id``'s
    parameters from their doses and levels in the event table ``data`` (any form
    :func:`read_table` accepts), with the population fit ``pop`` (a :class:`PopulationFit`,
    its JSON, or the path of ``medtwin pk fit --out``) as prior; 2000 importance samples, seed 1.
    A subject without levels gets the prior. Releases the GIL.

    Raises :class:`medtwin.InputError` (bad table or fit, unknown ``id``)."""
    if isinstance(pop, PopulationFit):
        pop_text = pop.to_json()
    elif isinstance(pop, os.PathLike) or (isinstance(pop, str) and not pop.lstrip().startswith("{")):
        with open(pop, encoding="utf-8") as f:
            pop_text = f.read()
    elif isinstance(pop, str):
        pop_text = pop
    else:
        raise TypeError(f"pop must be a PopulationFit, its JSON or a path, not {type(pop).__name__}")
    text, source = _table_text(data)
    doc, params, n_levels, _, _ = _native.pk_twin(pop_text, text, source, str(id))
    return TdmTwin(doc, dict(params), n_levels)
