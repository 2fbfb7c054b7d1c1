//! Boards, roles and the OS profile: plain typed data read from `boards/*.toml` and
//! `profiles/*.toml`. A board is data: no code branches on a board's name, so adding a board
//! is adding a TOML file.

pub mod board;
pub mod check;
pub mod os;
pub mod qemu;
pub mod role;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::node::Role;

pub use board::*;
pub use os::*;
pub use role::*;

/// Packages a board or profile takes from another suite of the same archive: suite name ->
/// package names, each possibly with `*` wildcards.
pub type SuitePackages = std::collections::BTreeMap<String, Vec<String>>;

/// Where boards, profiles and overlays live: the project directory, found from
/// `EDGEIMG_DATA_DIR`, the current directory, or next to the executable's source tree.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn locate(explicit: Option<&Path>) -> Result<DataDir> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = explicit {
            candidates.push(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os("EDGEIMG_DATA_DIR") {
            candidates.push(PathBuf::from(p));
        }
        if let Ok(cwd) = std::env::current_dir() {
            candidates.push(cwd);
        }
        candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                candidates.push(dir.join("../share/edgeimg"));
            }
        }
        for c in &candidates {
            if c.join("boards").is_dir() && c.join("profiles").is_dir() {
                return Ok(DataDir { root: c.clone() });
            }
        }
        bail!(
            "cannot find edgeimg's boards/ and profiles/ (looked in {}); run from the project \
             directory or set EDGEIMG_DATA_DIR",
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    pub fn boards_dir(&self) -> PathBuf {
        self.root.join("boards")
    }

    pub fn profiles_dir(&self) -> PathBuf {
        self.root.join("profiles")
    }

    pub fn overlays_dir(&self) -> PathBuf {
        self.root.join("overlays")
    }

    /// Every board, sorted by name.
    pub fn boards(&self) -> Result<Vec<Board>> {
        let dir = self.boards_dir();
        let mut boards = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                boards.push(load_board(&path)?);
            }
        }
        boards.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(boards)
    }

    pub fn board(&self, name: &str) -> Result<Board> {
        let path = self.boards_dir().join(format!("{name}.toml"));
        if !valid_name(name) || !path.is_file() {
            let known: Vec<String> = self.boards()?.into_iter().map(|b| b.name).collect();
            bail!(
                "unknown board '{name}': known boards are {} (each is a file in {})",
                known.join(", "),
                self.boards_dir().display()
            );
        }
        let board = load_board(&path)?;
        if let Some(why) = &board.unsupported {
            bail!("board '{name}' cannot be built: {why}");
        }
        Ok(board)
    }

    pub fn base(&self) -> Result<BaseProfile> {
        let path = self.profiles_dir().join("base.toml");
        let base: BaseProfile = read_toml(&path)?;
        crate::profile::check::base(&base, &path)?;
        Ok(base)
    }

    pub fn role(&self, role: Role) -> Result<RoleProfile> {
        let path = self.profiles_dir().join(format!("{role}.toml"));
        if !path.is_file() {
            bail!("no profile for role '{role}': expected {}", path.display());
        }
        let profile: RoleProfile = read_toml(&path)?;
        if profile.role != role {
            bail!(
                "{}: `role = \"{}\"` does not match the file name (expected \"{role}\")",
                path.display(),
                profile.role
            );
        }
        crate::profile::check::role(&profile, &path)?;
        Ok(profile)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '+')
}

fn load_board(path: &Path) -> Result<Board> {
    let mut board: Board = read_toml(path)?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if board.name != stem {
        bail!(
            "{}: `name = \"{}\"` does not match the file name (expected \"{stem}\")",
            path.display(),
            board.name
        );
    }
    board.file = path.to_path_buf();
    crate::profile::check::board(&board)?;
    Ok(board)
}

/// Reads a TOML file into `T`; errors name the file, line and column.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    // Boards and profiles are a few KiB; a data directory is given by the user.
    let text = crate::util::bounded::read_text(path, 1 << 20, "data file")?;
    parse_toml(&text, path)
}

/// Parses TOML text; errors read `file:line:col: message`.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!(toml_error(&e, text, path)))
}

/// Formats a toml error as `file:line:col: message`.
pub fn toml_error(e: &toml::de::Error, text: &str, path: &Path) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
            let col = before.len() - line_start + 1;
            // Name the key the error is about when the line is `key = value`.
            let line_text = text[line_start..].lines().next().unwrap_or("");
            match line_text
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && !k.contains(' '))
            {
                Some(key) if !msg.contains(key) => {
                    format!("{}:{line}:{col}: `{key}`: {msg}", path.display())
                }
                _ => format!("{}:{line}:{col}: {msg}", path.display()),
            }
        }
        None => format!("{}: {msg}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> DataDir {
        DataDir::locate(Some(Path::new(env!("CARGO_MANIFEST_DIR")))).unwrap()
    }

    #[test]
    fn every_board_and_role_file_parses() {
        let d = data();
        let boards = d.boards().unwrap();
        assert!(boards.iter().any(|b| b.name == "x86-64"));
        d.base().unwrap();
        for r in [
            Role::Controller,
            Role::Worker,
            Role::ControllerWorker,
            Role::Single,
        ] {
            assert_eq!(d.role(r).unwrap().role, r);
        }
    }

    #[test]
    fn unknown_board_lists_the_known_ones() {
        let e = data().board("pi9").unwrap_err().to_string();
        assert!(
            e.contains("unknown board 'pi9'") && e.contains("x86-64"),
            "{e}"
        );
    }

    #[test]
    fn toml_errors_name_file_line_and_column() {
        let text = "suite = \"trixie\"\ncomponents = 3\n";
        let e = parse_toml::<BaseProfile>(text, Path::new("profiles/base.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("profiles/base.toml:2:"), "{e}");
    }
}
