//! Chunked execution (`TrialPlan::chunk_parquet` + `assemble_trial`, the distributed backends'
//! path) gives the same bytes as `run_trial`, for any chunking and chunk order.

use medtwin_cohort::trial::{assemble_trial, chunk_range, AssembleStats, TrialPlan};
use medtwin_cohort::{run_trial, RunControl, TrialSpec};
use std::path::{Path, PathBuf};

fn spec(design: &str, n: usize, extra: &str) -> TrialSpec {
    let t = format!(
        r#"
[cohort]
from = "simglucose-30"
group = "all"
n = {n}
seed = 7
[scenario]
days = 1
random_meals_seed = 11
sensor = {{ kind = "dexcom", noise = true }}
pump = "insulet"
[design]
kind = "{design}"
[[arm]]
name = "bb"
controller = {{ kind = "basal-bolus", target_mg_dl = 140 }}
[[arm]]
name = "pid"
controller = {{ kind = "pid" }}
[[endpoint]]
metric = "tir_pct"
[[endpoint]]
metric = "mean_mg_dl"
[execution]
chunk_patients = 4
{extra}
"#
    );
    TrialSpec::from_toml_str(&t, "t.toml", Path::new(".")).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medtwin-chunks-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn plain() -> RunControl<'static> {
    RunControl {
        progress: &|_| {},
        cancel: None,
        resume: false,
    }
}

/// Simulate `ranges` (in the given order) into chunk files under `dir/chunks`.
fn chunks(s: &TrialSpec, dir: &Path, ranges: &[(usize, usize)]) -> (Vec<PathBuf>, u64) {
    let plan = TrialPlan::new(s).unwrap();
    let cd = dir.join("chunks");
    std::fs::create_dir_all(&cd).unwrap();
    let mut files = Vec::new();
    let mut sims = plan.setup_cost().0;
    for &(a, b) in ranges {
        let c = plan.chunk_parquet(a, b).unwrap();
        sims += c.simulations;
        let f = cd.join(format!("chunk-{a:06}-{b:06}.parquet"));
        std::fs::write(&f, &c.parquet).unwrap();
        assert_eq!(chunk_range(&f).unwrap(), (a, b));
        files.push(f);
    }
    (files, sims)
}

fn same_files(a: &Path, b: &Path) {
    for f in ["results.parquet", "summary.json", "plots/tir_pct.svg"] {
        let x = std::fs::read(a.join(f)).unwrap();
        let y = std::fs::read(b.join(f)).unwrap();
        assert!(
            x == y,
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn crossover_chunks_in_any_order_assemble_to_the_same_bytes() {
    let s = spec("crossover", 11, "");
    let (full, d) = (tmp("xfull"), tmp("xchunks"));
    let single = run_trial(&s, &full, &plain()).unwrap();
    // chunk boundaries unrelated to chunk_patients = 4, simulated out of order
    let (files, sims) = chunks(&s, &d, &[(7, 11), (0, 3), (3, 7)]);
    assert_eq!(sims, single.simulations);
    let out = d.join("out");
    let stats = AssembleStats {
        simulations: sims,
        patient_days: sims,
        resumed_patients: 0,
        wall_s: 1.0,
    };
    let sum = assemble_trial(&s, &out, &files, stats).unwrap();
    assert_eq!(sum.summary.n_patients, 11);
    same_files(&full, &out);
    // a gap, an overlap, another specification: refused, nothing written
    let bad = tmp("xbad");
    let e = assemble_trial(&s, &bad, &files[..2], stats)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cover"), "{e}");
    let e = assemble_trial(&s, &bad, &[files[1].clone(), files[1].clone()], stats)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exactly once"), "{e}");
    let other = spec("crossover", 11, "[prognostic]\nhistorical_n = 20");
    let xo = tmp("xother");
    let (fo, _) = chunks(&other, &xo, &[(0, 11)]);
    let e = assemble_trial(&s, &bad, &fo, stats)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another trial specification"), "{e}");
    assert!(!bad.join("results.parquet").exists());
    assert!(TrialPlan::new(&s).unwrap().chunk_parquet(5, 12).is_err());
    for x in [full, d, bad, xo] {
        std::fs::remove_dir_all(x).unwrap();
    }
}

#[test]
fn parallel_design_with_prognostic_score_assembles_to_the_same_bytes() {
    let s = spec("parallel", 10, "[prognostic]\nhistorical_n = 20");
    let (full, d) = (tmp("pfull"), tmp("pchunks"));
    let single = run_trial(&s, &full, &plain()).unwrap();
    let (files, sims) = chunks(&s, &d, &[(0, 1), (1, 10)]);
    assert_eq!(sims, single.simulations);
    let out = d.join("out");
    assemble_trial(&s, &out, &files, AssembleStats::default()).unwrap();
    same_files(&full, &out);
    std::fs::remove_dir_all(full).unwrap();
    std::fs::remove_dir_all(d).unwrap();
}
