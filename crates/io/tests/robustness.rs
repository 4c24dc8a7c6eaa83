//! No reader panics on any input: garbage bytes, truncated and mutated files.

use std::fs;
use std::path::{Path, PathBuf};

use medtwin_io::{import_nightscout, import_t1d_uom, read_patient_toml, read_record_csv};

/// Small deterministic generator (64-bit LCG), to avoid a dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn bytes(&mut self, n: usize, alphabet: Option<&[u8]>) -> Vec<u8> {
        (0..n)
            .map(|_| match alphabet {
                Some(a) => a[(self.next() as usize) % a.len()],
                None => self.next() as u8,
            })
            .collect()
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("medtwin-io-garbage-{name}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

const CSV_ALPHABET: &[u8] = b"0123456789/:,.-+TZ \r\n\"abcdegilmnrstuLRUN\xEF\xBB\xBF\xFF\x00";

/// Random content: raw bytes, CSV-ish bytes, or a valid header followed by CSV-ish bytes.
fn garbage(rng: &mut Lcg, header: &[u8]) -> Vec<u8> {
    let n = (rng.next() % 600) as usize;
    match rng.next() % 3 {
        0 => rng.bytes(n, None),
        1 => rng.bytes(n, Some(CSV_ALPHABET)),
        _ => {
            let mut v = header.to_vec();
            v.extend(rng.bytes(n, Some(CSV_ALPHABET)));
            v
        }
    }
}

#[test]
fn record_csv_and_patient_toml_survive_garbage() {
    let dir = tmp("record");
    let mut rng = Lcg(42);
    for i in 0..400 {
        let bytes = garbage(&mut rng, b"time,kind,value,unit,insulin\n");
        let p = dir.join("record.csv");
        fs::write(&p, &bytes).unwrap();
        let _ = read_record_csv(&p);
        let t = dir.join(format!("p{}.toml", i % 2));
        fs::write(&t, &bytes).unwrap();
        let _ = read_patient_toml(&t);
    }
    // Plausible rows with random mutations.
    let base = b"time,kind,value,unit,insulin\n2024-01-01T00:00:00Z,cgm,5.5,mmol/L,\n2024-01-01T00:05:00+01:00,bolus,2,U,aspart\n";
    for _ in 0..400 {
        let mut v = base.to_vec();
        for _ in 0..(rng.next() % 6) {
            let pos = (rng.next() as usize) % v.len();
            v[pos] = CSV_ALPHABET[(rng.next() as usize) % CSV_ALPHABET.len()];
        }
        let p = dir.join("mutated.csv");
        fs::write(&p, &v).unwrap();
        if let Ok((record, report)) = read_record_csv(&p) {
            assert_eq!(
                record.entries.len() + report.rejected.len() + report.count("duplicates_dropped"),
                report.count("rows_read")
            );
        }
    }
}

#[test]
fn t1d_uom_survives_garbage() {
    let dir = tmp("t1d");
    let files = [
        ("Glucose Data/UoMGlucose7777.csv", &b"bg_ts,value\r\n"[..]),
        (
            "Insulin Data/Basal Data/UoMBasal7777.csv",
            &b"basal_ts,basal_dose,insulin_kind\r\n"[..],
        ),
        (
            "Insulin Data/Bolus Data/UoMBolus7777.csv",
            &b"bolus_ts,bolus_dose\r\n"[..],
        ),
        (
            "Nutrition Data/UoMNutrition7777.csv",
            &b"meal_ts,meal_type,meal_tag,carbs_g,prot_g,fat_g,fibre_g\r\n"[..],
        ),
    ];
    let mut rng = Lcg(7);
    for _ in 0..300 {
        for (rel, header) in files {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, garbage(&mut rng, header)).unwrap();
        }
        let _ = import_t1d_uom(&dir, "7777");
    }
    // Dates and times at the edges of what parses.
    let edge = "bg_ts,value\n00/00/0000 00:00,1\n99/99/9999 99:99:99,1\n31/12/9999 23:59,5\n01/01/0001 00:00,5\n\
                1/1/2024 1:1,5\n01/01/-200 00:00,5\n01/01/2024 00:00:60,5\n01/01/2024,5\n 01/01/2024  00:00 ,5\n";
    for (rel, header) in files {
        fs::write(dir.join(rel), header).unwrap();
    }
    fs::write(dir.join(files[0].0), edge).unwrap();
    let (_, report) = import_t1d_uom(&dir, "7777").unwrap();
    assert!(!report.rejected.is_empty());
}

#[test]
fn nightscout_survives_garbage() {
    let dir = tmp("ns");
    let mut rng = Lcg(3);
    let shapes: [&[u8]; 4] = [
        b"[{\"type\":\"sgv\",\"sgv\":",
        b"[{\"eventType\":\"Temp Basal\",\"created_at\":\"2024-01-01T00:00:00Z\",\"absolute\":",
        b"[{\"type\":\"sgv\",\"sgv\":120,\"date\":1e300},{\"type\":\"mbg\",\"mbg\":\"x\",\"date\":-1e20},null,1,\"s\",[]]",
        b"[{\"eventType\":null,\"insulin\":\"1e309\",\"created_at\":12},{\"eventType\":\"BG Check\",\"glucose\":5,\"units\":\"mmol\",\"date\":0}]",
    ];
    for i in 0..300 {
        let e = dir.join("e.json");
        let t = dir.join("t.json");
        let mut g = shapes[i % 4].to_vec();
        if i % 2 == 0 {
            let n = (rng.next() % 40) as usize;
            g.extend(rng.bytes(n, Some(b"0123456789.,:{}[]\"e-+ ")));
        }
        fs::write(&e, &g).unwrap();
        fs::write(&t, garbage(&mut rng, b"[")).unwrap();
        let _ = import_nightscout(&e, &t);
        let _ = import_nightscout(&t, &e);
    }
    fs::write(dir.join("s.json"), shapes[2]).unwrap();
    fs::write(dir.join("u.json"), shapes[3]).unwrap();
    let (_, report) = import_nightscout(&dir.join("s.json"), &dir.join("u.json")).unwrap();
    assert!(!report.rejected.is_empty());
}
