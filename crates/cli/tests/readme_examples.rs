//! Every `medtwin …` command in the README's `sh` blocks runs as written, in README order,
//! through the real binary (issue 15, item 8), in a scratch directory where `tests/` is the
//! repository's test data. The commands that are not run are listed here with the reason, and
//! the test fails if the README's commands and this list drift apart (a new example cannot be
//! skipped silently). The README's simulate example (a `toml` block and its output) is run by
//! `hardening.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Commands shown but not run, with why.
const NOT_RUN: [(&str, &str); 3] = [
    (
        "medtwin cardiac cipa mydrug.toml --doses 1,4 --out mine --beats 1000",
        "a template for the user's own drug file",
    ),
    (
        "medtwin cardiac cipa --drug sotalol --doses 1,2,3,4 --out sot --samples 50",
        "200 000 beats (~25 CPU-min); the samples path is run by cardiac.rs with 3 samples",
    ),
    (
        "medtwin cardiac cipa mydrug.toml --doses 1,2,3,4 --out mine --samples 2000 --samples-dir fda/mydrug",
        "a template: the user's drug file and the FDA's full sample tables are not bundled",
    ),
];

/// The `medtwin` commands of the README's `sh` blocks, continuation lines joined, trailing
/// comments removed, in order.
fn readme_commands(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        let t = line.trim_end();
        if t.starts_with("```") {
            in_sh = t == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = match t.find(" #") {
            Some(i) => t[..i].trim_end(),
            None => t,
        };
        match code.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head.trim());
                pending.push(' ');
            }
            None => {
                pending.push_str(code.trim());
                let cmd = std::mem::take(&mut pending);
                if cmd.starts_with("medtwin ") {
                    out.push(cmd);
                }
            }
        }
    }
    out
}

#[test]
fn readme_commands_are_parsed_with_continuations_and_comments() {
    let text = "x\n```sh\nmedtwin a b \\\n  --c d   # note\ncargo run\n```\nmedtwin no\n```toml\nmedtwin no\n```\n";
    assert_eq!(readme_commands(text), vec!["medtwin a b --c d".to_string()]);
}

#[test]
fn every_readme_command_runs_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let commands = readme_commands(&readme);
    let shown_not_run: Vec<&str> = commands
        .iter()
        .map(String::as_str)
        .filter(|c| NOT_RUN.iter().any(|(n, _)| n == c))
        .collect();
    assert_eq!(
        shown_not_run,
        NOT_RUN.map(|(c, _)| c).to_vec(),
        "the README's commands and NOT_RUN drifted apart"
    );
    let dir = std::env::temp_dir().join(format!("medtwin-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(repo().join("tests"), dir.join("tests")).unwrap();
    let mut ran = 0;
    for cmd in commands
        .iter()
        .filter(|c| !shown_not_run.contains(&c.as_str()))
    {
        assert!(
            !cmd.contains(['"', '\'', '$', '*', '|', '>', '<']),
            "write the test a shell for: {cmd}"
        );
        let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
        let o = Command::new(env!("CARGO_BIN_EXE_medtwin"))
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "README command failed: {cmd}\nexit {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        ran += 1;
    }
    // the PK chain (6), the sepsis twin (3) and the dofetilide assay (1) at least
    assert!(ran >= 10, "ran {ran} README commands");
    // what the examples say they write
    for f in [
        "pheno.csv",
        "pop.json",
        "metrics.json",
        "twin.json",
        "whatif/summary.csv",
        "dof/results.csv",
    ] {
        assert!(dir.join(f).exists(), "{f} not written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
