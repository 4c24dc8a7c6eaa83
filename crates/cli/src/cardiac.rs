//! `medtwin cardiac …`: cardiac safety twins (CiPA). Thin: every command calls into `medtwin-cardiac`.

use crate::error::CliError;
use clap::Subcommand;

/// Cardiac commands.
#[derive(Subcommand)]
pub enum CardiacCmd {
    /// The CiPA in-silico proarrhythmia assay (being built; see issue 18).
    Cipa,
}

/// Run a cardiac command.
pub fn cardiac(c: CardiacCmd) -> Result<(), CliError> {
    match c {
        CardiacCmd::Cipa => Err(CliError::failure("cardiac cipa: not built yet")),
    }
}
