//! `medtwin petab …`: PEtab problems. Thin: every command calls into `medtwin-petab`.

use crate::error::CliError;
use clap::Subcommand;

/// PEtab commands.
#[derive(Subcommand)]
pub enum PetabCmd {
    /// Log-likelihood of a PEtab problem at its nominal parameters (being built; see issue 16).
    Llh,
}

/// Run a PEtab command.
pub fn petab(c: PetabCmd) -> Result<(), CliError> {
    match c {
        PetabCmd::Llh => Err(CliError::failure("petab llh: not built yet")),
    }
}
