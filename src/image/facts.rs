//! What an image says about itself, for booting it: its board, role, hostname and k0s
//! version, from the manifest beside it and the node config on its boot partition (which
//! `configure` may have changed since the build), and Raspberry Pi Imager's preseed there.

use std::path::Path;

use anyhow::{Context, Result};

use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::node::contract::{Hostname, BOOT_DIR};
use crate::node::NodeConfig;
use crate::profile::{Board, DataDir};

/// Where Raspberry Pi Imager writes its OS customisation on the boot partition (preseed.sh).
const PRESEED: &str = "rpi-preseed.toml";

/// What an image says about itself.
pub struct ImageFacts {
    pub board: Board,
    pub role: String,
    pub hostname: Hostname,
    pub k0s_version: String,
}

/// Reads `manifest.json` beside the image, then the node config on its boot partition.
pub fn image_facts(data: &DataDir, image: &Path) -> Result<ImageFacts> {
    let manifest_path = image.with_file_name(MANIFEST_FILE);
    let m = Manifest::read(&manifest_path)
        .with_context(|| {
            "smoke and run need the manifest written beside the image by `edgeimg build`"
        })?
        .into_image(&manifest_path)?;
    let node = node_on_image(image)?;
    let built_default = crate::plan::default_hostname(&m.board, &m.role);
    let hostname = expected_hostname(
        &m.hostname,
        &built_default,
        node.as_ref(),
        preseed_hostname(image)?,
    );
    let role = node
        .as_ref()
        .and_then(|n| n.role())
        .map_or(m.role, |r| r.to_string());
    Ok(ImageFacts {
        board: data.board(&m.board)?,
        role,
        hostname,
        k0s_version: m.k0s_version,
    })
}

/// The hostname the node will take, the way its boot decides it: the node config's (the
/// build's when `configure` never ran), else one made from the MAC; Imager's preseed
/// replaces the build's `<board>-<role>` default or no name, never one the node config
/// chose (preseed.sh).
fn expected_hostname(
    built: &str,
    built_default: &str,
    node: Option<&NodeConfig>,
    preseed: Option<String>,
) -> Hostname {
    let configured = match node {
        Some(n) => n.hostname.clone().filter(|h| !h.is_empty()),
        None => Some(built.to_string()).filter(|h| !h.is_empty()),
    };
    match (configured, preseed) {
        (Some(h), Some(p)) if h == built_default => Hostname::Is(p),
        (None, Some(p)) => Hostname::Is(p),
        (Some(h), _) => Hostname::Is(h),
        (None, None) => Hostname::FromMac,
    }
}

/// `[system] hostname` of Imager's preseed on the boot partition, if there is one.
fn preseed_hostname(image: &Path) -> Result<Option<String>> {
    let Some(bytes) = read_boot_file(image, PRESEED)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    let value: toml::Value = toml::from_str(&text)
        .with_context(|| format!("{}: {PRESEED} is not TOML", image.display()))?;
    Ok(value
        .get("system")
        .and_then(|s| s.get("hostname"))
        .and_then(|h| h.as_str())
        .filter(|h| !h.is_empty())
        .map(str::to_string))
}

/// A file of the image's boot partition, if it has one.
fn read_boot_file(image: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let file =
        std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let what = image.display().to_string();
    let (_, offset, size) = super::personalize::boot_partition(&file, &what)?;
    let mut vol = crate::fs::fat::FatVolume::open_partition(&file, offset, size)?;
    vol.read_file(name)
        .with_context(|| format!("{what}: reading {name} on the boot partition"))
}

/// The node config on the image's boot partition, if any.
pub fn node_on_image(image: &Path) -> Result<Option<NodeConfig>> {
    let name = format!("{BOOT_DIR}/node.toml");
    match read_boot_file(image, &name)? {
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes).to_string();
            Ok(Some(NodeConfig::from_toml_str(&text, Path::new(&name))?))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(hostname: Option<&str>) -> NodeConfig {
        let toml = match hostname {
            Some(h) => format!("hostname = \"{h}\"\n"),
            None => String::new(),
        };
        NodeConfig::from_toml_str(&toml, Path::new("node.toml")).unwrap()
    }

    #[test]
    fn the_expected_hostname_is_decided_as_the_node_decides_it() {
        let d = "pi4-worker";
        let is = |h: &str| Hostname::Is(h.into());
        let p = || Some("from-imager".to_string());
        // No node config on the card: the build's.
        assert_eq!(
            expected_hostname("pi4-worker", d, None, None),
            is("pi4-worker")
        );
        // configure named it, or named none (the node makes one from its MAC).
        assert_eq!(
            expected_hostname(d, d, Some(&node(Some("n1"))), None),
            is("n1")
        );
        assert_eq!(
            expected_hostname(d, d, Some(&node(None)), None),
            Hostname::FromMac
        );
        // Imager's preseed names it unless the node config chose a name.
        assert_eq!(expected_hostname(d, d, None, p()), is("from-imager"));
        assert_eq!(
            expected_hostname(d, d, Some(&node(Some(d))), p()),
            is("from-imager")
        );
        assert_eq!(
            expected_hostname(d, d, Some(&node(None)), p()),
            is("from-imager")
        );
        assert_eq!(
            expected_hostname(d, d, Some(&node(Some("n1"))), p()),
            is("n1")
        );
    }
}
