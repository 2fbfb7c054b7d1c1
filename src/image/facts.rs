//! What an image says about itself, for booting it: its board, role, hostname and k0s
//! version, from the manifest beside it and the node config on its boot partition (which
//! `configure` may have changed since the build).

use std::path::Path;

use anyhow::{Context, Result};

use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::node::contract::BOOT_DIR;
use crate::node::NodeConfig;
use crate::profile::{Board, DataDir};

/// What an image says about itself.
pub struct ImageFacts {
    pub board: Board,
    pub role: String,
    pub hostname: String,
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
    let mut facts = ImageFacts {
        board: data.board(&m.board)?,
        role: m.role,
        hostname: m.hostname,
        k0s_version: m.k0s_version,
    };
    if let Some(node) = node_on_image(image)? {
        if let Some(h) = node.hostname.clone() {
            facts.hostname = h;
        }
        if let Some(r) = node.role() {
            facts.role = r.to_string();
        }
    }
    Ok(facts)
}

/// The node config on the image's boot partition, if any.
pub fn node_on_image(image: &Path) -> Result<Option<NodeConfig>> {
    let file =
        std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let what = image.display().to_string();
    let (_, offset, size) = super::personalize::boot_partition(&file, &what)?;
    let mut vol = crate::fs::fat::FatVolume::open_partition(&file, offset, size)?;
    let name = format!("{BOOT_DIR}/node.toml");
    match vol.read_file(&name)? {
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes).to_string();
            Ok(Some(NodeConfig::from_toml_str(&text, Path::new(&name))?))
        }
        None => Ok(None),
    }
}
