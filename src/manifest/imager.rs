//! The Raspberry Pi Imager repository list (`<stem>.os_list.json`) written beside Pi images,
//! for Imager's "custom repository" option.

use std::path::Path;

use anyhow::{Context, Result};

use super::OutputRecord;
use crate::plan::Plan;
use crate::util::atomic::write_atomic;

/// For boards Imager writes for (`devices`), writes the Imager `os_list` JSON beside the image (from the output records:
/// image first, `.img.xz` when built); returns its path. Other boards: nothing.
pub fn write_imager(
    plan: &Plan,
    devices: Option<&[String]>,
    out_dir: &Path,
    stem: &str,
    outputs: &[OutputRecord],
) -> Result<Option<std::path::PathBuf>> {
    let Some(devices) = devices else {
        return Ok(None);
    };
    let img = format!("{stem}.img");
    let image = outputs
        .iter()
        .find(|o| o.file == img)
        .context("the image is not among the outputs")?;
    let download = outputs
        .iter()
        .find(|o| o.file == format!("{img}.xz"))
        .unwrap_or(image);
    let url_base = std::env::var("EDGEIMG_IMAGER_URL_BASE").unwrap_or_default();
    let json = imager_json(plan, devices, image, download, &url_base);
    let path = out_dir.join(imager_file_name(stem));
    write_atomic(&path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok(Some(path))
}

/// The file name of the Raspberry Pi Imager `os_list` JSON written beside a Pi image.
pub fn imager_file_name(stem: &str) -> String {
    format!("{stem}.os_list.json")
}

/// A Raspberry Pi Imager repository (`os_list`) with one entry for the image, for Imager's
/// "custom repository" option. `download` is the file Imager fetches (the `.img.xz` when
/// built, else the raw `.img`), `image` the raw image it writes; `url_base` (a URL ending
/// in `/`, or empty for a bare file name) is put in front of the download's name.
pub fn imager_json(
    plan: &Plan,
    devices: &[String],
    image: &OutputRecord,
    download: &OutputRecord,
    url_base: &str,
) -> serde_json::Value {
    let days = (plan.source_date_epoch / 86_400) as i64;
    let (y, m, d) = crate::fs::fat::dirent::civil_from_days(days);
    serde_json::json!({
        "os_list": [{
            "name": format!("edgeimg {} {} (k0s {})", plan.board.name, plan.role, plan.k0s_version),
            "description": format!("{}: immutable Debian {} node for k0s, role {}", plan.board.description, plan.suite, plan.role),
            "url": format!("{url_base}{}", download.file),
            "release_date": format!("{y:04}-{m:02}-{d:02}"),
            "extract_size": image.size,
            "extract_sha256": image.sha256,
            "image_download_size": download.size,
            "image_download_sha256": download.sha256,
            "devices": devices,
            "init_format": "none",
        }]
    })
}
