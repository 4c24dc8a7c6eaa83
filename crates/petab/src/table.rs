//! Tab-separated PEtab tables (PEtab v1 specification: one header row, one entry per line,
//! columns identified by name, in any order).

use crate::PetabError;
use std::path::{Path, PathBuf};

/// A TSV table read whole: named columns, rows with their 1-based line numbers.
#[derive(Debug, Clone)]
pub struct Tsv {
    /// Where it came from (for messages).
    pub path: PathBuf,
    /// Column names of the header row.
    pub header: Vec<String>,
    /// `(line number, cells)`; rows shorter than the header are padded with empty cells.
    pub rows: Vec<(usize, Vec<String>)>,
}

impl Tsv {
    /// Read `path`. Errors: [`PetabError::Io`], [`PetabError::Table`] for an empty file.
    pub fn read(path: &Path) -> Result<Tsv, PetabError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PetabError::Io(format!("{}: {e}", path.display())))?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, head)) = lines.next() else {
            return Err(PetabError::Table {
                file: path.display().to_string(),
                line: 1,
                msg: "empty table".into(),
            });
        };
        let header: Vec<String> = head.split('\t').map(|s| s.trim().to_string()).collect();
        let rows = lines
            .map(|(i, l)| {
                let mut c: Vec<String> = l.split('\t').map(|s| s.trim().to_string()).collect();
                if c.len() < header.len() {
                    c.resize(header.len(), String::new());
                }
                (i + 1, c)
            })
            .collect();
        Ok(Tsv {
            path: path.to_path_buf(),
            header,
            rows,
        })
    }

    /// Index of column `name`, if present.
    pub fn col(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// Index of a column the specification requires. Errors: [`PetabError::Table`] at line 1.
    pub fn required(&self, name: &str) -> Result<usize, PetabError> {
        self.col(name)
            .ok_or_else(|| self.error(1, format!("required column '{name}' missing")))
    }

    /// An error at `line` of this table.
    pub fn error(&self, line: usize, msg: String) -> PetabError {
        PetabError::Table {
            file: self.path.display().to_string(),
            line,
            msg,
        }
    }

    /// Parse a number cell (`inf`, `-inf`, `nan` allowed). Errors name file, line and column.
    pub fn number(&self, line: usize, col: &str, cell: &str) -> Result<f64, PetabError> {
        cell.parse::<f64>()
            .map_err(|_| self.error(line, format!("column '{col}': '{cell}' is not a number")))
    }
}
