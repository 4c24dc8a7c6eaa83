//! File-level errors.

use thiserror::Error;

/// A file-level failure: the whole file (or folder) could not be used. Row-level problems are
/// never an `IoError`; they go to [`crate::ImportReport::rejected`] and the valid rows are kept.
///
/// Every variant names the file or folder concerned and the reason, and its `Display` is a
/// complete, user-facing sentence.
#[derive(Debug, Error)]
pub enum IoError {
    /// The file exists but could not be read (permissions, I/O error, it is a directory...).
    #[error("cannot read {file}: {source}")]
    Read {
        /// Path of the file, as given.
        file: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write {file}: {source}")]
    Write {
        /// Path of the file, as given.
        file: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The first line of a CSV file is not the expected header (or the file is empty).
    #[error("{file}: wrong or missing header: expected `{expected}`, found `{found}`")]
    Header {
        /// Path of the file.
        file: String,
        /// The expected header (alternatives separated by ` or `).
        expected: String,
        /// What the first line held (`(empty file)` when there was none).
        found: String,
    },
    /// A folder that must exist does not.
    #[error("folder {path} not found: {reason}")]
    MissingFolder {
        /// Path of the folder.
        path: String,
        /// Why it is needed.
        reason: String,
    },
    /// A file that must exist does not.
    #[error("file {file} not found: {reason}")]
    MissingFile {
        /// Path of the file.
        file: String,
        /// Why it is needed.
        reason: String,
    },
    /// The file is readable but its content as a whole cannot be used (invalid TOML or JSON,
    /// unknown key in `patient.toml`, impossible patient value, JSON that is not an array...).
    #[error("{file}: {reason}")]
    Parse {
        /// Path of the file.
        file: String,
        /// What is wrong, naming the key or position when known.
        reason: String,
    },
    /// A record cannot be written because one of its entries is invalid (it could not be read
    /// back).
    #[error("{file}: cannot write entry {index} ({source_ref}): {reason}")]
    InvalidEntry {
        /// Path of the file being written.
        file: String,
        /// Index of the entry in [`crate::Record::entries`].
        index: usize,
        /// The entry's [`crate::RecordEntry::source`].
        source_ref: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An argument is unusable (e.g. a T1D-UOM participant id that is not a plain id).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
