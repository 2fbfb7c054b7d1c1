//! The Raspberry Pi Imager repository (`os_list.json`) written beside Pi images, for Imager's
//! "custom repository" option (Imager 2.x: App options, Content repository, Use custom file or
//! URL).
//!
//! The file follows Imager's own schema (`doc/json-schema/os-list-schema.json` in
//! raspberrypi/rpi-imager, vendored as tests/fixtures/rpi-imager-os-list-schema.json) and what
//! Imager 2.x reads from it (`src/hwlistmodel.cpp`, `src/oslistmodel.cpp`): a top-level
//! `imager.devices` list (Imager's device step shows only these, and filters the OS list by
//! their `tags`), and one `os_list` entry per image with an absolute `url`, an `icon`, the
//! `devices` tags it runs on, `architecture` (armv8 / armhf, Imager's words), `release_date`,
//! sizes and digests, and `init_format = "rpi-preseed"`: Imager then writes its OS
//! customisation as `rpi-preseed.toml` onto the boot partition, which the node reads at boot
//! (`overlays/rootfs/usr/lib/edgeimg/preseed.sh`).
//!
//! One file lists every board built into the folder: a build keeps the entries of other
//! images (`<board>-<role>`) already in the folder's `os_list.json` and replaces its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::OutputRecord;
use crate::plan::Plan;
use crate::util::atomic::write_atomic;

/// The repository file's name.
pub const IMAGER_FILE: &str = "os_list.json";

/// Imager's built-in icon for other special-purpose operating systems (Imager resolves
/// `icons/...` in its own resources), so that the list needs no icon file served beside it.
pub const ICON: &str = "icons/cat_other_specific_purpose_operating_systems.png";

/// Checks an `--imager-url-base` value: an absolute `http://`, `https://` or `file://` URL
/// of the folder the images will be served from. Returns it ending in `/`.
pub fn check_url_base(url: &str) -> Result<String> {
    let rest = ["http://", "https://", "file://"]
        .iter()
        .find_map(|p| url.strip_prefix(p));
    let Some(rest) = rest else {
        bail!(
            "--imager-url-base {url:?}: give the absolute URL the images will be served from \
             (https://HOST/PATH/, http://..., or file:///PATH/ for a local folder)"
        );
    };
    let file = url.starts_with("file://");
    if (file && !rest.starts_with('/'))
        || (!file && (rest.is_empty() || rest.starts_with('/')))
        || url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '"' | '\\'))
    {
        bail!(
            "--imager-url-base {url:?}: give scheme://HOST[:PORT]/PATH/ (or file:///PATH/) \
             without spaces, quotes, backslashes, ? or #"
        );
    }
    let mut u = url.to_string();
    if !u.ends_with('/') {
        u.push('/');
    }
    Ok(u)
}

/// For boards Imager writes for (`devices`) and with a URL base, writes `os_list.json` into
/// `staging` (from the output records: image first, `.img.xz` when built), keeping the other
/// images' entries of the published `<published>/os_list.json`; returns its path. Other
/// boards, or no URL base: nothing.
pub fn write_imager(
    plan: &Plan,
    devices: Option<&[String]>,
    url_base: Option<&str>,
    staging: &Path,
    published: &Path,
    stem: &str,
    outputs: &[OutputRecord],
) -> Result<Option<PathBuf>> {
    let (Some(devices), Some(url_base)) = (devices, url_base) else {
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
    let bmap = outputs
        .iter()
        .find(|o| o.file == format!("{stem}.bmap"))
        .map(|o| o.file.as_str());
    let entry = os_entry(plan, devices, image, download, bmap, url_base);
    let old = published.join(IMAGER_FILE);
    let existing = match std::fs::read_to_string(&old) {
        Ok(text) => parse_entries(&old, &text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", old.display())),
    };
    let json = repository(existing, entry);
    let path = staging.join(IMAGER_FILE);
    let mut text = serde_json::to_string_pretty(&json)?;
    text.push('\n');
    write_atomic(&path, text.as_bytes())?;
    Ok(Some(path))
}

/// The `os_list` entries of a published repository file.
fn parse_entries(path: &Path, text: &str) -> Result<Vec<Value>> {
    let fix = "remove it (the build writes a new one) or build into another --out folder";
    let v: Value = serde_json::from_str(text).with_context(|| {
        format!(
            "{}: not a JSON Raspberry Pi Imager repository; {fix}",
            path.display()
        )
    })?;
    let Some(list) = v.get("os_list").and_then(Value::as_array) else {
        bail!("{}: no `os_list` array; {fix}", path.display());
    };
    for (i, e) in list.iter().enumerate() {
        if entry_stem(e).is_none() {
            bail!(
                "{}: os_list[{i}] has no `url` naming an image (.img or .img.xz); {fix}",
                path.display()
            );
        }
    }
    Ok(list.clone())
}

/// `<board>-<role>` of an entry, from the last part of its `url`.
fn entry_stem(e: &Value) -> Option<String> {
    let url = e.get("url")?.as_str()?;
    let name = url.rsplit('/').next()?;
    let name = name.strip_suffix(".xz").unwrap_or(name);
    name.strip_suffix(".img")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The whole repository: the existing entries of other images, this one (sorted by image
/// name, so that the file does not depend on build order), and the devices they run on.
pub fn repository(existing: Vec<Value>, entry: Value) -> Value {
    let mut by_stem: BTreeMap<String, Value> = BTreeMap::new();
    for e in existing.into_iter().chain(std::iter::once(entry)) {
        if let Some(s) = entry_stem(&e) {
            by_stem.insert(s, e);
        }
    }
    let mut tags: Vec<String> = Vec::new();
    for e in by_stem.values() {
        for t in e["devices"].as_array().into_iter().flatten() {
            if let Some(t) = t.as_str() {
                if !tags.iter().any(|x| x == t) {
                    tags.push(t.to_string());
                }
            }
        }
    }
    let list: Vec<Value> = by_stem.into_values().collect();
    json!({
        "imager": { "devices": devices(&tags) },
        "os_list": list,
    })
}

/// The device of an Imager device tag (`pi4-64bit`: the Raspberry Pi 4), as Imager's own
/// repository names them; unknown tags are devices of their own.
fn device_of(tag: &str) -> (&str, &str) {
    match tag.split('-').next().unwrap_or(tag) {
        "pi5" => ("Raspberry Pi 5", "Raspberry Pi 5, 500 and Compute Module 5"),
        "pi4" => (
            "Raspberry Pi 4",
            "Raspberry Pi 4 B, 400 and Compute Module 4",
        ),
        "pi3" => (
            "Raspberry Pi 3",
            "Raspberry Pi 3 B, 3 B+, 3 A+ and Zero 2 W",
        ),
        "pi2" => ("Raspberry Pi 2", "Raspberry Pi 2 B"),
        "pi1" => ("Raspberry Pi 1", "Raspberry Pi 1 and Zero"),
        _ => (tag, tag),
    }
}

/// `imager.devices`: one device per Raspberry Pi model, with the tags of it that the images
/// carry, newest model first (Imager shows them in this order).
fn devices(tags: &[String]) -> Vec<Value> {
    let mut by_name: BTreeMap<&str, (&str, Vec<&str>)> = BTreeMap::new();
    for t in tags {
        let (name, desc) = device_of(t);
        let d = by_name.entry(name).or_insert((desc, Vec::new()));
        d.1.push(t);
    }
    let mut out: Vec<(&str, &str, Vec<&str>)> = by_name
        .into_iter()
        .map(|(n, (d, mut t))| {
            t.sort();
            (n, d, t)
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(a.0));
    out.into_iter()
        .map(|(name, description, tags)| {
            let arch = if tags.iter().any(|t| t.ends_with("-64bit")) {
                "armv8"
            } else {
                "armhf"
            };
            json!({
                "name": name,
                "description": description,
                "tags": tags,
                "matching_type": "exclusive",
                "architecture": arch,
            })
        })
        .collect()
}

/// Imager's architecture word for a Debian architecture.
fn imager_arch(debian: &str) -> &str {
    match debian {
        "arm64" => "armv8",
        other => other,
    }
}

/// The `os_list` entry of one image. `download` is the file Imager fetches (the `.img.xz`
/// when built, else the raw `.img`), `image` the raw image it writes; `url_base` (an
/// absolute URL ending in `/`) is put in front of their names.
pub fn os_entry(
    plan: &Plan,
    devices: &[String],
    image: &OutputRecord,
    download: &OutputRecord,
    bmap: Option<&str>,
    url_base: &str,
) -> Value {
    let date = crate::util::time::Civil::from_unix(plan.source_date_epoch);
    let mut e = json!({
        "name": format!("edgeimg {} {} (k0s {})", plan.board.name, plan.role, plan.k0s_version),
        "description": format!("{}: immutable Debian {} node for k0s, role {}", plan.board.description, plan.suite, plan.role),
        "icon": ICON,
        "url": format!("{url_base}{}", download.file),
        "release_date": format!("{:04}-{:02}-{:02}", date.year, date.month, date.day),
        "extract_size": image.size,
        "extract_sha256": image.sha256,
        "image_download_size": download.size,
        "image_download_sha256": download.sha256,
        "devices": devices,
        "architecture": imager_arch(plan.board.arch.debian()),
        "init_format": "rpi-preseed",
        "website": "https://k0sproject.io/",
    });
    if let Some(b) = bmap {
        e["bmap_url"] = Value::String(format!("{url_base}{b}"));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_bases_are_absolute_and_end_in_a_slash() {
        assert_eq!(
            check_url_base("https://img.example.org/pi").unwrap(),
            "https://img.example.org/pi/"
        );
        assert_eq!(
            check_url_base("file:///srv/images/").unwrap(),
            "file:///srv/images/"
        );
        for bad in [
            "img.example.org/pi",
            "/srv/images",
            "https://",
            "https:///x",
            "file://host/x",
            "https://a b/",
            "https://a/?x",
        ] {
            let e = check_url_base(bad).unwrap_err().to_string();
            assert!(e.contains("--imager-url-base"), "{bad}: {e}");
        }
    }

    fn entry(stem: &str, tag: &str) -> Value {
        json!({ "url": format!("https://x.example.org/{stem}.img.xz"), "devices": [tag], "name": stem })
    }

    #[test]
    fn one_file_lists_every_image_and_its_devices() {
        let old = vec![
            entry("pi4-worker", "pi4-64bit"),
            entry("pi3-worker", "pi3-64bit"),
        ];
        let mut new = entry("pi3-worker", "pi3-64bit");
        new["name"] = "new".into();
        let r = repository(old, new);
        let list = r["os_list"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0]["name"], "new",
            "the build's own entry replaced the old one"
        );
        assert_eq!(list[1]["name"], "pi4-worker");
        let d = r["imager"]["devices"].as_array().unwrap();
        assert_eq!(d[0]["name"], "Raspberry Pi 4");
        assert_eq!(d[0]["tags"], json!(["pi4-64bit"]));
        assert_eq!(d[1]["name"], "Raspberry Pi 3");
        assert_eq!(d[1]["architecture"], "armv8");
        let armhf = repository(vec![], entry("pi3-armhf-worker", "pi3-32bit"));
        assert_eq!(armhf["imager"]["devices"][0]["architecture"], "armhf");
    }

    #[test]
    fn a_foreign_file_is_refused_with_what_to_do() {
        let p = Path::new("/o/os_list.json");
        for bad in ["{", "{}", r#"{"os_list":[{"url":"x.zip"}]}"#] {
            let e = format!("{:#}", parse_entries(p, bad).unwrap_err());
            assert!(
                e.contains("/o/os_list.json") && e.contains("remove it"),
                "{e}"
            );
        }
        assert_eq!(
            entry_stem(&json!({"url": "http://a.example.org/p/pi4-worker.img"})).as_deref(),
            Some("pi4-worker")
        );
    }
}
