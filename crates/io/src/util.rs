//! Small helpers shared by the readers.

use std::path::Path;

use crate::IoError;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Remove a leading UTF-8 byte-order mark; says whether there was one.
pub(crate) fn strip_bom(bytes: &[u8]) -> (&[u8], bool) {
    match bytes.strip_prefix(BOM) {
        Some(rest) => (rest, true),
        None => (bytes, false),
    }
}

/// Read a whole file, mapping failures to [`IoError::Read`].
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, IoError> {
    std::fs::read(path).map_err(|source| IoError::Read { file: path.display().to_string(), source })
}

/// A CSV reader over bytes: no header handling, rows of any length (checked by the caller).
pub(crate) fn csv_reader(data: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(data)
}

/// 1-based line where a CSV record starts.
pub(crate) fn record_line(rec: &csv::ByteRecord) -> Option<usize> {
    rec.position().and_then(|p| usize::try_from(p.line()).ok())
}

/// Line of a CSV error, when it carries one.
pub(crate) fn error_line(err: &csv::Error) -> Option<usize> {
    err.position().and_then(|p| usize::try_from(p.line()).ok())
}

/// Fields as trimmed strings, or the reason they are not text.
pub(crate) fn fields_utf8(rec: &csv::ByteRecord) -> Result<Vec<String>, String> {
    rec.iter()
        .enumerate()
        .map(|(i, f)| {
            std::str::from_utf8(f)
                .map(|s| s.trim().to_string())
                .map_err(|_| format!("column {} is not valid UTF-8 text", i + 1))
        })
        .collect()
}

/// Header fields as trimmed text (invalid UTF-8 replaced, for the error message).
pub(crate) fn header_fields(rec: &csv::ByteRecord) -> Vec<String> {
    rec.iter().map(|f| String::from_utf8_lossy(f).trim().to_string()).collect()
}

/// File name of a path (or the whole path when it has none).
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// `lines 3, 5, 9` with at most `max` numbers and `(+N more)` after.
pub(crate) fn list_lines(lines: &[usize], max: usize) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = lines.iter().take(max).map(|l| l.to_string()).collect();
    let word = if lines.len() == 1 { "line" } else { "lines" };
    let more = if lines.len() > max { format!(" (+{} more)", lines.len() - max) } else { String::new() };
    format!("{word} {}{more}", shown.join(", "))
}

/// Problem with a numeric cell.
pub(crate) enum NumberProblem {
    /// Empty cell.
    Empty,
    /// `NaN` (any case).
    NaN,
    /// Not a number at all.
    Unparsable,
}

/// Parse a numeric cell, telling empty and NaN apart from garbage.
pub(crate) fn parse_number(s: &str) -> Result<f64, NumberProblem> {
    let s = s.trim();
    if s.is_empty() {
        return Err(NumberProblem::Empty);
    }
    if s.eq_ignore_ascii_case("nan") {
        return Err(NumberProblem::NaN);
    }
    s.parse::<f64>().map_err(|_| NumberProblem::Unparsable)
}

/// Truncate text for an error message (keeps at most `max` characters).
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}
