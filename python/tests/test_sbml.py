"""medtwin.sbml against analytic solutions and libRoadRunner references."""

import csv
import math

import pytest

import medtwin

KA, KE, V = 1.2, 0.15, 20.0  # tests/data/twin/oral_pk_1cpt.xml (hours, central 20 L)


def bateman(t, dose, ke=KE):
    """One-compartment oral PK, concentration: D/V * ka/(ka-ke) * (exp(-ke t) - exp(-ka t))."""
    return dose / V * KA / (KA - ke) * (math.exp(-ke * t) - math.exp(-KA * t))


@pytest.fixture
def pk_model(data_dir):
    return medtwin.sbml.load(data_dir / "twin" / "oral_pk_1cpt.xml")


def test_inspect(pk_model):
    assert pk_model.species == ["A_gut", "C"]
    assert pk_model.parameters == ["ka", "ke"]
    assert pk_model.get("ka") == 1.2 and pk_model.get("central") == 20.0
    assert "A_gut" in pk_model.info()
    with pytest.raises(medtwin.InputError, match="nope"):
        pk_model.get("nope")


def test_bateman_by_initial_amount(pk_model):
    m = pk_model.copy().set("A_gut", 100.0)
    t = m.simulate(24.0, 97)
    assert t.column_names == ["time", "A_gut", "C"]
    assert t.num_rows == 97
    times = t.column("time").to_pylist()
    assert times[0] == 0.0 and times[-1] == 24.0 and times[1] == pytest.approx(0.25)
    worst = max(abs(c - bateman(x, 100.0)) for x, c in zip(times, t.column("C").to_pylist()))
    assert worst < 1e-8, worst
    # gut: first-order absorption
    for x, a in zip(times, t.column("A_gut").to_pylist()):
        assert a == pytest.approx(100.0 * math.exp(-KA * x), rel=1e-7, abs=1e-10)
    # the original model is untouched by set() on the copy
    assert pk_model.get("A_gut") == 0.0


def test_bateman_by_doses_and_parameter_change(pk_model):
    m = pk_model.copy().set("ke", 0.3)
    times = [0.0, 0.5, 1.0, 2.0, 6.0, 12.0, 12.0, 13.0, 24.0]
    t = m.simulate(0, times=times, doses=[(0.0, "A_gut", 100.0), (12.0, "A_gut", 50.0)], variables=["C"])
    c = t.column("C").to_pylist()
    assert t.column("time").to_pylist() == times
    for x, y in zip(times, c):
        expect = bateman(x, 100.0, 0.3) + (bateman(x - 12.0, 50.0, 0.3) if x > 12.0 else 0.0)
        assert y == pytest.approx(expect, rel=1e-7, abs=1e-10), x
    # row at 12 h is recorded before the second dose (a trough), twice
    assert c[5] == c[6]


def test_amount_reporting(pk_model):
    m = pk_model.copy().set("A_gut", 100.0)
    conc = m.simulate(5.0, 6, variables=["C"]).column("C").to_pylist()
    amt = m.simulate(5.0, 6, variables=["C"], amount=["C"]).column("C").to_pylist()
    for c, a in zip(conc, amt):
        assert a == pytest.approx(c * V, rel=1e-12)


def test_load_from_text(data_dir):
    text = (data_dir / "twin" / "oral_pk_1cpt.xml").read_text()
    m = medtwin.sbml.load(text)
    assert m.source == "<string>" and m.species == ["A_gut", "C"]


def _ref(data_dir, name):
    with open(data_dir / "biomodels" / f"REF_{name}.csv", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [[float(v) for v in r] for r in rows[1:]]


@pytest.mark.parametrize("name", ["BIOMD0000000001", "BIOMD0000000040"])
def test_biomodels_match_libroadrunner(data_dir, name):
    """Largest error relative to each species' range vs libRoadRunner 2.10 (CVODE, rtol 1e-10)."""
    header, ref = _ref(data_dir, name)
    m = medtwin.sbml.load(str(data_dir / "biomodels" / f"{name}.xml"))
    t = m.simulate(ref[-1][0], len(ref), variables=header[1:])
    assert t.column_names == header
    worst = 0.0
    for j, h in enumerate(header[1:], start=1):
        col = [r[j] for r in ref]
        rng = (max(col) - min(col)) or max(abs(v) for v in col) or 1e-300
        got = t.column(h).to_pylist()
        worst = max(worst, max(abs(g - r) / rng for g, r in zip(got, col)))
    assert worst <= 1e-3, worst  # the criterion of crates/sbml/tests/biomodels.rs


def test_errors(pk_model, tmp_path):
    with pytest.raises(medtwin.SbmlError, match="XML"):
        medtwin.sbml.load("<sbml><unclosed></sbml>")
    with pytest.raises(medtwin.SbmlError, match="I/O"):
        medtwin.sbml.load(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<notsbml/>")
    with pytest.raises(medtwin.SbmlError, match="bad.xml"):
        medtwin.sbml.load(bad)
    with pytest.raises(medtwin.InputError, match="ka"):
        pk_model.simulate(1.0, 3, doses=[(0.0, "ka", 1.0)])
    with pytest.raises(medtwin.InputError, match="n_points"):
        pk_model.simulate(1.0, 1)
    with pytest.raises(medtwin.InputError, match="method"):
        pk_model.simulate(1.0, 3, method="euler")
    with pytest.raises(medtwin.InputError):
        pk_model.simulate(1.0, 3, variables=["nope"])
    with pytest.raises(medtwin.InputError, match="rtol"):
        pk_model.simulate(1.0, 3, rtol=-1)
    with pytest.raises(medtwin.InputError, match="finite"):
        pk_model.copy().set("ka", float("inf"))
    assert issubclass(medtwin.UnsupportedError, medtwin.SbmlError)
    assert issubclass(medtwin.SbmlError, medtwin.MedtwinError)
