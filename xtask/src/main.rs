//! Build steps cargo cannot express. `cargo xtask assets [DIR]` writes the man pages
//! and the bash, zsh and fish completions of `plutus-sync`, generated from its clap
//! definitions (`plutus_sync::cli::Cli`), into DIR (default `target/assets` of the
//! workspace): `man/*.1` and `completions/`. The .deb ships them (Cargo.toml,
//! `[package.metadata.deb]` assets), so run it before `cargo deb`; tests/ci.sh does.
//!
//! Why a step and not build.rs: a build script cannot use the library it belongs to,
//! and cargo-deb takes assets from fixed paths, where OUT_DIR is not.

#![forbid(unsafe_code)]

use clap::CommandFactory;
use clap_complete::Shell;
use plutus_sync::cli::Cli;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const BIN: &str = "plutus-sync";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [cmd] if cmd == "assets" => workspace().join("target/assets"),
        [cmd, dir] if cmd == "assets" => PathBuf::from(dir),
        _ => {
            eprintln!("usage: cargo xtask assets [DIR]");
            return ExitCode::from(2);
        }
    };
    match assets(&dir) {
        Ok(files) => {
            println!("wrote {} files under {}", files.len(), dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            ExitCode::from(2)
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is in the workspace")
        .to_path_buf()
}

/// Man pages (one per command and subcommand: `plutus-sync.1`,
/// `plutus-sync-journal-forget.1`, …) into `dir/man`, completions into
/// `dir/completions` (`plutus-sync.bash`, `_plutus-sync`, `plutus-sync.fish`).
/// Returns the files written.
pub fn assets(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man = dir.join("man");
    // Afresh: a page of a subcommand that no longer exists must not be shipped.
    match std::fs::remove_dir_all(&man) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&man)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        files.push(clap_complete::generate_to(
            shell,
            &mut Cli::command(),
            BIN,
            &completions,
        )?);
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_man_pages_render_without_warnings_and_the_completions_know_every_command() {
        let dir = tempfile::tempdir().unwrap();
        let files = assets(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "plutus-sync.1",
            "plutus-sync-run.1",
            "plutus-sync-sync.1",
            "plutus-sync-journal.1",
            "plutus-sync-journal-forget.1",
            "plutus-sync-replay.1",
            "plutus-sync-check.1",
            "plutus-sync.bash",
            "_plutus-sync",
            "plutus-sync.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }

        // What `man -l` shows, with groff's warnings on: none.
        for page in ["plutus-sync.1", "plutus-sync-journal-forget.1"] {
            let out = Command::new("man")
                .args(["--warnings", "-E", "UTF-8", "-l"])
                .arg(dir.path().join("man").join(page))
                .env("MANWIDTH", "80")
                .env("LC_ALL", "C.UTF-8")
                .env("MAN_KEEP_FORMATTING", "0")
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run man: {e}\n  hint: tests/ci.sh installs it (Debian package man-db)")
                });
            // Bold and underline come as overstrikes (c BACKSPACE c): keep the last.
            let mut text = String::new();
            for c in String::from_utf8_lossy(&out.stdout).chars() {
                if c == '\u{8}' {
                    text.pop();
                } else {
                    text.push(c);
                }
            }
            // Justified lines: one space between words is enough to compare.
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && err.is_empty(),
                "man -l {page}: {err}"
            );
            assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
            if page == "plutus-sync.1" {
                for cmd in [
                    "plutus-sync-run(1)",
                    "plutus-sync-journal(1)",
                    "plutus-sync-check(1)",
                    "Exit codes: 0 success",
                ] {
                    assert!(text.contains(cmd), "{cmd} not in the page:\n{text}");
                }
            } else {
                assert!(text.contains("--reason"), "{text}");
            }
        }

        // The completions offer the subcommands and their options.
        let completions = dir.path().join("completions");
        for (file, long) in [
            ("plutus-sync.bash", "--"),
            ("_plutus-sync", "--"),
            ("plutus-sync.fish", "-l "),
        ] {
            let text = std::fs::read_to_string(completions.join(file)).unwrap();
            let (demo_dir, reason) = (format!("{long}demo-dir"), format!("{long}reason"));
            for word in ["journal", "forget", &demo_dir, &reason] {
                assert!(text.contains(word), "{word} not in {file}");
            }
        }
        // bash loads it and binds it to the command.
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {} && complete -p plutus-sync",
                completions.join("plutus-sync.bash").display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("plutus-sync"),
            "{out:?}"
        );
    }
}
