//! A role: `profiles/<role>.toml` (controller, worker, controller+worker, single).

use serde::{Deserialize, Serialize};

use super::UserSpec;
use crate::node::Role;

/// A role: `profiles/<role>.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleProfile {
    pub role: Role,
    pub description: String,
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub root_modules: Vec<String>,
    /// Packages from other suites of the archive (see `Board::suites`).
    #[serde(default, skip_serializing_if = "super::SuitePackages::is_empty")]
    pub suites: super::SuitePackages,
    #[serde(default)]
    pub users: Vec<UserSpec>,
}
