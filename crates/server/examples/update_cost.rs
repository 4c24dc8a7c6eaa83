//! Cost of the pieces of one live-twin update, single-threaded (profiling aid): calibration,
//! assimilating 20 min of CGM, a 120-min forecast, (de)serialising the twin.
//!
//! ```sh
//! RAYON_NUM_THREADS=1 cargo run --release -p medtwin-server --example update_cost -- [PARTICLES]
//! ```

use std::path::Path;
use std::time::Instant;

use medtwin_io::RecordKind;
use medtwin_twin::{InputSchedule, Twin, TwinEngine, TwinSettings};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    let (rec, _) = medtwin_io::import_t1d_uom(&data, "2313").unwrap();
    let sched = InputSchedule::from_record(&rec).unwrap();
    let settings = TwinSettings {
        n_particles: n,
        ..TwinSettings::default()
    };
    let t = Instant::now();
    let mut e = TwinEngine::start(&sched, settings).unwrap();
    eprintln!("fit {:.2} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    e.assimilate_until(&sched, 1440.0 * 3.0).unwrap();
    eprintln!(
        "assimilate 2 days {:.3} s ({} cgm total)",
        t.elapsed().as_secs_f64(),
        sched.cgm.len()
    );
    let reps = 20;
    // assimilate 20 min at a time
    let t = Instant::now();
    let mut until = e.filter.t_min;
    for _ in 0..reps {
        until += 20.0;
        e.assimilate_until(&sched, until).unwrap();
    }
    let a = t.elapsed().as_secs_f64() / reps as f64;
    eprintln!(
        "assimilate 20 min: {:.2} ms ({:.2} us/particle-min)",
        a * 1e3,
        a * 1e6 / (20.0 * n as f64)
    );
    let t = Instant::now();
    for _ in 0..reps {
        e.forecast(&sched, 120, None, 1).unwrap();
    }
    let f = t.elapsed().as_secs_f64() / reps as f64;
    eprintln!(
        "forecast 120 min: {:.2} ms ({:.2} us/particle-min)",
        f * 1e3,
        f * 1e6 / (120.0 * n as f64)
    );
    let t = Instant::now();
    let mut js = String::new();
    for _ in 0..reps {
        js = serde_json::to_string(&e.to_twin(&sched, Some("p".into()))).unwrap();
    }
    eprintln!(
        "to_twin+serialise: {:.2} ms, {} bytes",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64,
        js.len()
    );
    let t = Instant::now();
    for _ in 0..reps {
        let d: Twin = serde_json::from_str(&js).unwrap();
        TwinEngine::from_twin(&d).unwrap();
    }
    eprintln!(
        "parse+from_twin: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
    let t = Instant::now();
    for _ in 0..reps {
        let _ = InputSchedule::from_record(&rec).unwrap();
    }
    eprintln!(
        "schedule from record (21 d): {:.2} ms, {} entries",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64,
        rec.entries.len()
    );
    let _ = rec.of_kind(RecordKind::Cgm).count();
}
