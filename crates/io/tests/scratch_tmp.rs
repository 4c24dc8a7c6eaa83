use std::path::Path;
#[test]
fn scratch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/t1d-uom");
    for p in ["2301", "2313"] {
        let (rec, rep) = medtwin_io::import_t1d_uom(&dir, p).unwrap();
        println!("==== {p}: {} entries {:?}..{:?}", rec.entries.len(), rec.first_time(), rec.last_time());
        print!("{rep}");
    }
}
