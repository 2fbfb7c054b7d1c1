//! Boards, roles and the OS profile: plain typed data read from `boards/*.toml` and
//! `profiles/*.toml`. A board is data: no code branches on a board's name, so adding a board
//! is adding a TOML file.

pub mod board;
pub mod builtin;
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

/// Where boards, profiles and overlays come from. The built-in data is embedded in the binary
/// ([`builtin`]); boards and profiles in `$XDG_CONFIG_HOME/edgeimg/{boards,profiles}` (default
/// `~/.config/edgeimg`) add to it or replace a built-in file of the same name, and so do those
/// of `--data-dir DIR` (or `EDGEIMG_DATA_DIR`), over both. `DIR/overlays`, when present,
/// replaces the built-in overlays whole. A file is taken whole from the highest layer that has
/// it: nothing is merged across layers, so what a build reads depends on the files' content
/// only, not on where they came from.
#[derive(Clone, Debug)]
pub struct DataDir {
    /// The folder whose `overlays/` the build reads.
    pub root: PathBuf,
    /// Folders that may hold `boards/` and `profiles/`, lowest precedence first.
    layers: Vec<Layer>,
    /// Keeps the extracted built-in data alive as long as any clone.
    _builtin: Option<std::sync::Arc<builtin::Builtin>>,
}

#[derive(Clone, Debug)]
struct Layer {
    dir: PathBuf,
    /// False for the built-in data.
    user: bool,
}

/// Where a board or profile file was found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum Origin {
    /// Embedded in the binary.
    BuiltIn,
    /// A user's file (`$XDG_CONFIG_HOME/edgeimg` or `--data-dir`).
    File(PathBuf),
}

impl DataDir {
    /// The built-in data, the user's config folder, then `explicit` (`--data-dir`) or
    /// `EDGEIMG_DATA_DIR`.
    pub fn locate(explicit: Option<&Path>) -> Result<DataDir> {
        let env = std::env::var_os("EDGEIMG_DATA_DIR").map(PathBuf::from);
        let extra = explicit.map(Path::to_path_buf).or(env);
        DataDir::with_layers(user_config_dir(), extra.as_deref())
    }

    /// The built-in data only (tests; what a host with no user files sees).
    pub fn builtin() -> Result<DataDir> {
        DataDir::with_layers(None, None)
    }

    fn with_layers(config: Option<PathBuf>, extra: Option<&Path>) -> Result<DataDir> {
        let b = builtin::Builtin::extract()?;
        let mut root = b.root().to_path_buf();
        let mut layers = vec![Layer {
            dir: root.clone(),
            user: false,
        }];
        if let Some(c) = config {
            layers.push(Layer { dir: c, user: true });
        }
        if let Some(d) = extra {
            let has = |s: &str| d.join(s).is_dir();
            if !has("boards") && !has("profiles") && !has("overlays") {
                bail!(
                    "--data-dir {}: holds none of boards/, profiles/, overlays/ (it adds to or \
                     replaces edgeimg's built-in ones)",
                    d.display()
                );
            }
            if has("overlays") {
                root = d.to_path_buf();
            }
            layers.push(Layer {
                dir: d.to_path_buf(),
                user: true,
            });
        }
        Ok(DataDir {
            root,
            layers,
            _builtin: Some(std::sync::Arc::new(b)),
        })
    }

    /// The highest layer's `sub/name`, with where it came from.
    fn find(&self, sub: &str, name: &str) -> Option<(PathBuf, Origin)> {
        self.layers.iter().rev().find_map(|l| {
            let p = l.dir.join(sub).join(name);
            p.is_file().then(|| {
                let origin = if l.user {
                    Origin::File(p.clone())
                } else {
                    Origin::BuiltIn
                };
                (p, origin)
            })
        })
    }

    /// Where board `name` comes from, if it exists.
    pub fn board_origin(&self, name: &str) -> Option<Origin> {
        valid_name(name)
            .then(|| self.find("boards", &format!("{name}.toml")))
            .flatten()
            .map(|(_, o)| o)
    }

    /// Where the user's boards and profiles are looked for, for messages.
    fn user_places(&self) -> String {
        let places: Vec<String> = self
            .layers
            .iter()
            .filter(|l| l.user)
            .map(|l| l.dir.display().to_string())
            .collect();
        if places.is_empty() {
            "$XDG_CONFIG_HOME/edgeimg or --data-dir DIR".to_string()
        } else {
            places.join(" and ")
        }
    }

    /// Every board, sorted by name: the built-in ones and the user's (a user's file replaces
    /// the built-in board of the same name).
    pub fn boards(&self) -> Result<Vec<Board>> {
        let mut names = std::collections::BTreeSet::new();
        for l in &self.layers {
            let dir = l.dir.join("boards");
            if !dir.is_dir() {
                continue;
            }
            for entry in crate::util::host_dir::read_dir_sorted(&dir)? {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        names.insert(stem.to_string());
                    }
                }
            }
        }
        let mut boards = Vec::new();
        for name in names {
            if let Some((path, _)) = self.find("boards", &format!("{name}.toml")) {
                boards.push(load_board(&path)?);
            }
        }
        Ok(boards)
    }

    pub fn board(&self, name: &str) -> Result<Board> {
        let found = valid_name(name)
            .then(|| self.find("boards", &format!("{name}.toml")))
            .flatten();
        let Some((path, _)) = found else {
            let known: Vec<String> = self.boards()?.into_iter().map(|b| b.name).collect();
            bail!(
                "unknown board '{name}': known boards are {} (built in, or a file \
                 boards/{name}.toml in {})",
                known.join(", "),
                self.user_places()
            );
        };
        let board = load_board(&path)?;
        if let Some(why) = &board.unsupported {
            bail!("board '{name}' cannot be built: {why}");
        }
        Ok(board)
    }

    pub fn base(&self) -> Result<BaseProfile> {
        let (path, _) = self
            .find("profiles", "base.toml")
            .context("no profiles/base.toml, built in or given")?;
        let base: BaseProfile = read_toml(&path)?;
        crate::profile::check::base(&base, &path)?;
        Ok(base)
    }

    pub fn role(&self, role: Role) -> Result<RoleProfile> {
        let Some((path, _)) = self.find("profiles", &format!("{role}.toml")) else {
            bail!(
                "no profile for role '{role}': expected profiles/{role}.toml in {}",
                self.user_places()
            );
        };
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

/// `$XDG_CONFIG_HOME/edgeimg` (default `~/.config/edgeimg`), when it exists.
fn user_config_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let dir = base.join("edgeimg");
    dir.is_dir().then_some(dir)
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
        every_board_and_role_file_parses_in(&data());
    }

    fn every_board_and_role_file_parses_in(d: &DataDir) {
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

    /// A user folder with `boards/x86-64.toml` (described otherwise) and a new board.
    fn user_folder() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("boards")).unwrap();
        let builtin = DataDir::builtin().unwrap();
        let text =
            std::fs::read_to_string(builtin.find("boards", "x86-64.toml").unwrap().0).unwrap();
        let (first, rest) = text.split_once("description = ").unwrap();
        let rest = rest.split_once('\n').unwrap().1;
        let mine = format!("{first}description = \"my own x86\"\n{rest}");
        std::fs::write(d.path().join("boards/x86-64.toml"), &mine).unwrap();
        let lab = mine.replace("name = \"x86-64\"", "name = \"lab-x86\"");
        assert_ne!(lab, mine, "no name line in x86-64.toml");
        std::fs::write(d.path().join("boards/lab-x86.toml"), lab).unwrap();
        d
    }

    #[test]
    fn built_in_data_needs_no_source_tree() {
        let d = DataDir::builtin().unwrap();
        assert!(!d.root.starts_with(env!("CARGO_MANIFEST_DIR")));
        assert!(d.root.join("overlays/initramfs/init").is_file());
        assert_eq!(d.board_origin("x86-64"), Some(Origin::BuiltIn));
        every_board_and_role_file_parses_in(&d);
    }

    #[test]
    fn user_boards_add_to_and_replace_the_built_in_ones() {
        let user = user_folder();
        for d in [
            // $XDG_CONFIG_HOME/edgeimg
            DataDir::with_layers(Some(user.path().to_path_buf()), None).unwrap(),
            // --data-dir
            DataDir::with_layers(None, Some(user.path())).unwrap(),
        ] {
            let boards = d.boards().unwrap();
            let x86 = boards.iter().find(|b| b.name == "x86-64").unwrap();
            assert_eq!(x86.description, "my own x86");
            assert!(boards.iter().any(|b| b.name == "lab-x86"));
            assert!(
                boards.iter().any(|b| b.name == "pi4"),
                "built-in boards stay"
            );
            assert_eq!(
                d.board_origin("lab-x86"),
                Some(Origin::File(user.path().join("boards/lab-x86.toml")))
            );
            assert_eq!(d.board("lab-x86").unwrap().arch, x86.arch);
            // No overlays/ in the folder: the built-in overlays are used.
            assert!(d.root.join("overlays/initramfs/init").is_file());
            d.base().unwrap();
        }
        // --data-dir is above $XDG_CONFIG_HOME.
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(other.path().join("boards")).unwrap();
        let text = std::fs::read_to_string(user.path().join("boards/x86-64.toml")).unwrap();
        std::fs::write(
            other.path().join("boards/x86-64.toml"),
            text.replace("my own x86", "from --data-dir"),
        )
        .unwrap();
        let d = DataDir::with_layers(Some(user.path().to_path_buf()), Some(other.path())).unwrap();
        assert_eq!(d.board("x86-64").unwrap().description, "from --data-dir");
        assert_eq!(d.board("lab-x86").unwrap().description, "my own x86");
    }

    #[test]
    fn a_data_dir_with_nothing_of_ours_is_refused() {
        let empty = tempfile::tempdir().unwrap();
        let e = DataDir::with_layers(None, Some(empty.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--data-dir") && e.contains("boards/"), "{e}");
    }

    #[test]
    fn a_broken_user_board_is_named_by_its_file() {
        let user = user_folder();
        std::fs::write(user.path().join("boards/x86-64.toml"), "name = 3\n").unwrap();
        let d = DataDir::with_layers(None, Some(user.path())).unwrap();
        let e = d.board("x86-64").unwrap_err().to_string();
        assert!(
            e.contains(&user.path().join("boards/x86-64.toml").display().to_string()),
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
