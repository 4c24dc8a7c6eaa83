//! The CLI's error type: a message and an exit code (2 = bad input, 1 = failure).

use std::fmt;

/// A CLI failure with its exit code.
#[derive(Debug)]
pub struct CliError {
    code: i32,
    msg: String,
}

impl CliError {
    /// Bad input (exit code 2): the message names the file, field and value.
    pub fn input(msg: impl Into<String>) -> Self {
        CliError {
            code: 2,
            msg: msg.into(),
        }
    }
    /// Any other failure (exit code 1).
    pub fn failure(msg: impl Into<String>) -> Self {
        CliError {
            code: 1,
            msg: msg.into(),
        }
    }
    /// Interrupted by the user (exit code 130, as a shell reports SIGINT).
    pub fn interrupted(msg: impl Into<String>) -> Self {
        CliError {
            code: 130,
            msg: msg.into(),
        }
    }
    /// Process exit code.
    pub fn code(&self) -> i32 {
        self.code
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

/// Map I/O errors on output paths to failures naming the path.
pub fn io_fail(path: &std::path::Path, e: impl fmt::Display) -> CliError {
    CliError::failure(format!("{}: {e}", path.display()))
}
