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
    std::fs::read(path).map_err(|source| IoError::Read {
        file: path.display().to_string(),
        source,
    })
}

/// A CSV reader over bytes: no header handling, rows of any length (checked by the caller).
pub(crate) fn csv_reader(data: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data)
}

/// Maps byte offsets of a CSV buffer to 1-based line numbers.
///
/// The `csv` crate's own line counter lags by one line on CRLF files (it counts the `\n` of a
/// record's terminator when reading the next record), so lines are computed here from the byte
/// offset of each record: leading line terminators (and blank lines, which the reader skips)
/// are passed over, then newlines before the record are counted.
pub(crate) struct LineIndex<'a> {
    data: &'a [u8],
    newlines: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Index the newlines of `data`.
    pub(crate) fn new(data: &'a [u8]) -> LineIndex<'a> {
        let newlines = data
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        LineIndex { data, newlines }
    }

    /// 1-based line of the first content byte at or after `byte`.
    fn line_at(&self, byte: u64) -> usize {
        let mut b = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        while b < self.data.len() && matches!(self.data.get(b), Some(b'\r' | b'\n')) {
            b += 1;
        }
        1 + self.newlines.partition_point(|&nl| nl < b)
    }

    /// Line where a record starts.
    pub(crate) fn record_line(&self, rec: &csv::ByteRecord) -> Option<usize> {
        rec.position().map(|p| self.line_at(p.byte()))
    }

    /// Line of a CSV error, when it carries a position.
    pub(crate) fn error_line(&self, err: &csv::Error) -> Option<usize> {
        err.position().map(|p| self.line_at(p.byte()))
    }
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
    rec.iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_string())
        .collect()
}

/// File name of a path (or the whole path when it has none).
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// `lines 3, 5, 9` with at most `max` numbers and `(+N more)` after.
pub(crate) fn list_lines(lines: &[usize], max: usize) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = lines.iter().take(max).map(|l| l.to_string()).collect();
    let word = if lines.len() == 1 { "line" } else { "lines" };
    let more = if lines.len() > max {
        format!(" (+{} more)", lines.len() - max)
    } else {
        String::new()
    };
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
