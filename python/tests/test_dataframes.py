"""Records and measurements given as pandas and polars DataFrames (issue 20: "twins on records
given as DataFrames"): the T1D twin (fit, update, forecast, backtest) on the bundled real
participant (T1D-UOM 2313) and the generic SBML twin (fit, update, forecast, backtest) on the
sepsis measurements give exactly what the same data read from the CLI's file gives, and what the
CLI computes from that file when it is built.

python/ci.sh installs pandas and polars; without them these tests are skipped."""

import json
import subprocess

import pyarrow.csv as pacsv
import pytest

import medtwin
from conftest import assert_close, cli_binary

pd = pytest.importorskip("pandas", reason="pandas is not installed (python/ci.sh installs it)")
pl = pytest.importorskip("polars", reason="polars is not installed (python/ci.sh installs it)")

PARTICLES = 60
G = medtwin.twin.generic


def cli(*args):
    exe = cli_binary()
    if exe is None:
        pytest.skip("the medtwin CLI is not built (set MEDTWIN_CLI or build target/{release,debug}/medtwin)")
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


# --- T1D twin ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def record(data_dir):
    return medtwin.twin.import_t1d_uom(data_dir / "t1d-uom", "2313")


@pytest.fixture(scope="module")
def record_csv(record, tmp_path_factory):
    """The record as the CLI's file (what ``medtwin import t1d-uom`` writes)."""
    p = tmp_path_factory.mktemp("rec") / "record.csv"
    pacsv.write_csv(record, p)
    return p


@pytest.fixture(scope="module")
def twin_from_file(record_csv):
    return medtwin.twin.fit(record_csv, until="30h", particles=PARTICLES)


def _frames(record_csv):
    """The record file read the way a user would: strings, or parsed time-zone-aware date-times."""
    p = pd.read_csv(record_csv)
    p_dt = p.assign(time=pd.to_datetime(p["time"], utc=True, format="ISO8601"))
    # the same instants in another time zone: the offsets change, the minutes do not
    p_london = p_dt.assign(time=p_dt["time"].dt.tz_convert("Europe/London"))
    q = pl.read_csv(record_csv, schema_overrides={"insulin": pl.String})
    q_dt = q.with_columns(pl.col("time").str.to_datetime(time_zone="UTC"))
    return {"pandas": p, "pandas-datetime": p_dt, "pandas-datetime-london": p_london,
            "polars": q, "polars-datetime": q_dt}


FRAMES = ["pandas", "pandas-datetime", "pandas-datetime-london", "polars", "polars-datetime"]


@pytest.mark.parametrize("kind", FRAMES)
def test_t1d_twin_from_a_dataframe_is_the_file_twin(kind, record_csv, twin_from_file):
    df = _frames(record_csv)[kind]
    assert type(df).__module__.split(".")[0] == kind.split("-")[0]
    tw = medtwin.twin.fit(df, until="30h", particles=PARTICLES)
    assert tw.to_json() == twin_from_file.to_json()
    assert tw.forecast(120).table.equals(twin_from_file.forecast(120).table)
    # update from the DataFrame == update from the file
    later = tw.update(df, until="33h")
    assert later.t_min == 1980.0
    assert later.to_json() == twin_from_file.update(record_csv, until="33h").to_json()
    # an RFC 3339 `until` is resolved against the DataFrame's first CGM reading as for the file
    assert medtwin.twin.fit(df, until="2023-12-17T06:04:00Z", particles=20).to_json() == \
        medtwin.twin.fit(record_csv, until="2023-12-17T06:04:00Z", particles=20).to_json()


@pytest.mark.parametrize("kind", ["pandas", "polars-datetime"])
def test_t1d_backtest_from_a_dataframe_is_the_file_backtest(kind, record_csv):
    df = _frames(record_csv)[kind]
    kw = dict(start="30h", end="36h", origin_every_min=120, horizons=(30, 60), particles=40)
    a = medtwin.twin.backtest(df, **kw)
    b = medtwin.twin.backtest(record_csv, **kw)
    for m in (a, b):  # timings
        m.pop("wall_s", None)
        m.pop("mean_update_ms", None)
    assert a["n_origins"] >= 3
    assert a == b


def test_t1d_dataframe_twin_is_the_cli_twin(record_csv, tmp_path):
    tw_py = medtwin.twin.fit(_frames(record_csv)["pandas-datetime"], until="30h", particles=PARTICLES)
    out = tmp_path / "tw.json"
    cli("twin", "fit", record_csv, "--until", "30h", "--particles", PARTICLES, "--out", out)
    cli_doc, py_doc = json.loads(out.read_text()), json.loads(tw_py.to_json())
    for k in ("t_min", "calibration", "particles", "weights", "log_lik", "schedule", "prior"):
        assert_close(cli_doc[k], py_doc[k], rel=1e-9, path=k)
    upd = tmp_path / "tw2.json"
    cli("twin", "update", out, record_csv, "--until", "33h", "--out", upd)
    mine = json.loads(tw_py.update(_frames(record_csv)["polars"], until="33h").to_json())
    for k in ("t_min", "particles", "weights", "log_lik"):
        assert_close(json.loads(upd.read_text())[k], mine[k], rel=1e-9, path=k)


def test_naive_datetimes_are_a_clear_error(record_csv):
    f = _frames(record_csv)
    naive_pd = f["pandas-datetime"].assign(time=f["pandas-datetime"]["time"].dt.tz_localize(None))
    naive_pl = f["polars-datetime"].with_columns(pl.col("time").dt.replace_time_zone(None))
    naive_pa = naive_pl.to_arrow()
    for df in (naive_pd, naive_pl, naive_pa):
        with pytest.raises(medtwin.InputError, match="without a time zone"):
            medtwin.twin.fit(df, until="30h", particles=10)
    with pytest.raises(medtwin.InputError, match="CGM"):  # wrong rows: the engine's error
        medtwin.twin.fit(f["pandas"][f["pandas"]["kind"] != "cgm"], until="30h", particles=10)


# --- generic SBML twin ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sepsis(data_dir):
    return {
        "model": data_dir / "biomodels" / "BIOMD0000000714.xml",
        "spec": data_dir / "sepsis" / "spec.toml",
        "first": data_dir / "sepsis" / "aseptic_0-12h.tsv",
        "second": data_dir / "sepsis" / "aseptic_12-24h.tsv",
    }


def _read(path, kind):
    return pd.read_csv(path, sep="\t") if kind == "pandas" else pl.read_csv(path, separator="\t")


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_generic_twin_from_dataframes_is_the_file_and_cli_twin(kind, sepsis, tmp_path):
    first, second = _read(sepsis["first"], kind), _read(sepsis["second"], kind)
    tw = G.fit(sepsis["model"], first, prior=sepsis["spec"])
    from_file = G.fit(sepsis["model"], sepsis["first"], prior=sepsis["spec"])
    assert tw.to_json() == from_file.to_json()
    upd = tw.update(second)
    assert upd.to_json() == from_file.update(sepsis["second"]).to_json()
    assert upd.forecast(48, step=6).table.equals(from_file.update(sepsis["second"]).forecast(48, step=6).table)
    # against the CLI on the files
    cj, cu = tmp_path / "fit.json", tmp_path / "upd.json"
    cli("twin", "fit", sepsis["model"], "--data", sepsis["first"], "--prior", sepsis["spec"], "--out", cj)
    assert_close(json.loads(tw.to_json()), json.loads(cj.read_text()))
    cli("twin", "update", cj, sepsis["second"], "--out", cu)
    assert_close(json.loads(upd.to_json()), json.loads(cu.read_text()))


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_generic_backtest_from_a_dataframe_is_the_file_backtest(kind, sepsis, tmp_path):
    allp = tmp_path / "all.tsv"
    allp.write_text(sepsis["first"].read_text() + sepsis["second"].read_text().split("\n", 1)[1])
    kw = dict(prior=sepsis["spec"], origins=[6, 12, 18], window=6)
    r = G.backtest(sepsis["model"], _read(allp, kind), **kw)
    assert r == G.backtest(sepsis["model"], allp, **kw)
    assert r["pooled"]["n"] == 12


def test_generic_dataframe_errors_name_the_row(sepsis):
    df = pd.read_csv(sepsis["first"], sep="\t")
    df.loc[2, "observableId"] = "nope"
    with pytest.raises(medtwin.InputError, match="nope"):
        G.fit(sepsis["model"], df, prior=sepsis["spec"])
