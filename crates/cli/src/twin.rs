//! Patient-twin commands (import, twin fit/forecast/backtest/report, demo).

use crate::error::CliError;
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum ImportCmd {}

#[derive(Subcommand)]
pub enum TwinCmd {}

pub fn import(c: ImportCmd) -> Result<(), CliError> {
    match c {}
}
pub fn twin(c: TwinCmd) -> Result<(), CliError> {
    match c {}
}
pub fn demo(_out: &Path, _days: u64) -> Result<(), CliError> {
    let _ = PathBuf::new();
    Err(CliError::failure("demo not yet implemented"))
}
