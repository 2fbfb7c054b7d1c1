//! The tables of the node config. Types check only their shape here; the meaning (valid
//! CIDR, allowed paths, ...) is checked in `check.rs`, where every problem can name its key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Role;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K0sConfig {
    /// Absent: the image's role (`EDGEIMG_ROLE` of the image's build.env).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// File holding the join token (relative to the node file's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Extra arguments for `k0s controller|worker`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// `key[=value]:Effect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<String>,
    /// A k0s.yaml (controllers), relative to the node file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
}

impl K0sConfig {
    pub fn is_empty(&self) -> bool {
        *self == K0sConfig::default()
    }
}

/// Kubernetes node labels: written either as a table (`labels = { zone = "a" }`) or as a
/// list of `"k=v"` strings. Kept sorted by key so the rendering is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

impl Labels {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of label = \"value\" or a list of \"key=value\" strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Labels, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    out.insert(k, v);
                }
                Ok(Labels(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Labels, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(item) = s.next_element::<String>()? {
                    let Some((k, v)) = item.split_once('=') else {
                        return Err(de::Error::custom(format!(
                            "label {} is not of the form \"key=value\"",
                            crate::util::text::q(&item)
                        )));
                    };
                    out.insert(k.to_string(), v.to_string());
                }
                Ok(Labels(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    #[default]
    Dhcp,
    Static,
}

impl NetMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            NetMode::Dhcp => "dhcp",
            NetMode::Static => "static",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(default)]
    pub mode: NetMode,
    /// CIDR (`192.168.1.10/24`), static mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers (IP addresses). With DHCP they replace the ones the server offers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

impl NetworkConfig {
    pub fn is_default(&self) -> bool {
        *self == NetworkConfig::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// Public key lines for root. No keys: no SSH server runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorized_keys: Vec<String>,
}

impl SshConfig {
    pub fn is_empty(&self) -> bool {
        self.authorized_keys.is_empty()
    }
}

/// NTP servers used when `[time] ntp` is absent. An explicit empty list disables NTP.
pub const DEFAULT_NTP: &str = "pool.ntp.org";

/// `[storage]`: a disk for data on a node booted from the network (the image's own data
/// partition is used otherwise). Made ext4 on first boot; a disk with partitions is refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `/dev/NAME` of a whole disk or partition (`/dev/vdb`, `/dev/nvme0n1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl StorageConfig {
    pub fn is_default(&self) -> bool {
        self.device.is_none()
    }

    /// Checks `device`: `/dev/` and a plain kernel device name.
    pub fn check(&self) -> Result<(), String> {
        let Some(d) = &self.device else {
            return Ok(());
        };
        let name = d.strip_prefix("/dev/").unwrap_or("");
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            || name.starts_with('.')
        {
            return Err(format!(
                "[storage] device = {}: give a device as /dev/NAME (like /dev/vdb or /dev/nvme0n1)",
                crate::util::text::q(d)
            ));
        }
        Ok(())
    }
}

/// `[install]`: a node booted from a USB stick (or another disk) copies itself onto this
/// disk and reboots into it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallConfig {
    /// `/dev/NAME` of a whole disk (`/dev/nvme0n1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Overwrite a disk that already has partitions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wipe: bool,
}

impl InstallConfig {
    pub fn is_default(&self) -> bool {
        *self == InstallConfig::default()
    }

    pub fn check(&self) -> Result<(), String> {
        StorageConfig {
            device: self.device.clone(),
        }
        .check()
        .map_err(|m| m.replace("[storage]", "[install]"))
    }
}

/// `[update]`: A/B updates on the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// Seconds a new slot on trial has to print the ready line before the node goes back to
    /// the previous slot; absent: 900.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_timeout: Option<u64>,
    /// A channel the node polls (`http://` or `https://`, e.g. `edgeimg serve`'s
    /// `http://HOST:8080/pi4-worker.update`): a newer signed bundle there is applied and booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Seconds between two looks at `url`; absent: 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_interval: Option<u64>,
    /// Seconds the board's hardware watchdog waits for a system on trial that stopped running
    /// (a kernel hang, a freeze) before it resets the board into the loader, which counts the
    /// try; 0: not armed; absent: 60 (edgeimg-update's default, busybox watchdog's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<u64>,
}

impl UpdateConfig {
    pub fn is_default(&self) -> bool {
        *self == UpdateConfig::default()
    }

    /// The first problem, as (field, message).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(t) = self.trial_timeout.filter(|t| !(60..=86_400).contains(t)) {
            return Err((
                "update.trial_timeout",
                format!("[update] trial_timeout = {t}: give seconds from 60 to 86400 (a trial must have time to reach ready)"),
            ));
        }
        if let Some(w) = self.watchdog.filter(|w| *w != 0 && !(5..=600).contains(w)) {
            return Err((
                "update.watchdog",
                format!("[update] watchdog = {w}: give seconds from 5 to 600 (how long a hung trial runs before the board is reset), or 0 to leave the watchdog off"),
            ));
        }
        if let Some(url) = &self.url {
            let scheme = url.starts_with("http://") || url.starts_with("https://");
            // The node's busybox wget gets it as one word: no spaces, quotes or controls.
            let plain = url
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '\'' | '"' | '\\' | '`' | '$'));
            if !scheme || !plain || url.len() > 1024 {
                return Err((
                    "update.url",
                    format!("[update] url = {url:?}: give an http:// or https:// URL of a bundle (no spaces or quotes), e.g. http://10.0.0.2:8080/pi4-worker.update"),
                ));
            }
        }
        if let Some(i) = self.check_interval {
            if self.url.is_none() {
                return Err((
                    "update.check_interval",
                    "[update] check_interval without url: say where to look (url = \"http://...\")"
                        .into(),
                ));
            }
            if !(60..=604_800).contains(&i) {
                return Err((
                    "update.check_interval",
                    format!(
                        "[update] check_interval = {i}: give seconds from 60 to 604800 (a week)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// NTP servers; absent = [`DEFAULT_NTP`], `[]` = no NTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp: Option<Vec<String>>,
    /// IANA zone name like `Europe/Berlin`; absent = UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl TimeConfig {
    pub fn is_default(&self) -> bool {
        *self == TimeConfig::default()
    }

    /// The servers the device uses.
    pub fn servers(&self) -> Vec<String> {
        match &self.ntp {
            Some(list) => list.clone(),
            None => vec![DEFAULT_NTP.to_string()],
        }
    }
}

/// `[boot]`: additions to the board's boot configuration, applied when the image is built.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// Kernel arguments appended to the board's (`cgroup_enable=memory`, `quiet`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_args: Vec<String>,
    /// Raspberry Pi `config.txt` lines appended to the board's (`dtoverlay=...`,
    /// `arm_freq=...`, `dtparam=poe_fan_temp0=...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_txt: Vec<String>,
}

impl BootConfig {
    pub fn is_empty(&self) -> bool {
        *self == BootConfig::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WifiConfig {
    pub ssid: String,
    /// WPA2 passphrase (8..63 bytes, any text without control characters) or 64 hex digits
    /// (a raw key); absent = open network. The device is given the key, never the
    /// passphrase ([`WifiConfig::device_psk`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk: Option<String>,
    /// ISO 3166 country code (regulatory domain), e.g. `DE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute path under /etc, /var, /usr/local or /opt.
    pub path: String,
    #[serde(default)]
    pub content: String,
    /// How `content` is written: absent = the text itself; `base64` = the base64 of the
    /// file's bytes (binary files; cloud-config's `b64`/`gzip` contents are decoded to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<ContentEncoding>,
    #[serde(default)]
    pub mode: FileMode,
    /// `user`, `user:group` or `:group` given to the file with `chown` on the device;
    /// absent = root (a user the root file system lacks is reported on the console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Add `content` at the end of the file instead of replacing it: once per node-config
    /// generation, or on every boot when an earlier entry rewrites the same file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub append: bool,
    /// Write the file late in the boot (after the join token and k0s.yaml are in place, just
    /// before `run_cmd`), as cloud-init's `defer` writes it after users and packages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub defer: bool,
}

impl FileSpec {
    /// A file of `path` holding `content` (mode 0644, root's), the rest default.
    pub fn new(path: &str, content: &str) -> FileSpec {
        FileSpec {
            path: path.to_string(),
            content: content.to_string(),
            encoding: None,
            mode: FileMode::default(),
            owner: None,
            append: false,
            defer: false,
        }
    }

    /// The bytes the device writes: `content`, or what its base64 decodes to.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match self.encoding {
            None => Ok(self.content.clone().into_bytes()),
            Some(ContentEncoding::Base64) => {
                let compact: String = self
                    .content
                    .chars()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                if compact.is_empty() {
                    return Ok(Vec::new());
                }
                super::check::base64_decode(&compact)
                    .ok_or_else(|| "is not valid base64 (A-Z a-z 0-9 + /, padded with =)".into())
            }
        }
    }
}

/// `[[files]] encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentEncoding {
    Base64,
}

/// Permission bits of a written file: `"0644"` (octal string) or an integer (`0o644`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl Default for FileMode {
    fn default() -> Self {
        FileMode(0o644)
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl FileMode {
    /// Parses an octal string such as `"0644"`, `"644"` or `"0o644"`.
    pub fn parse_octal(s: &str) -> Result<FileMode, String> {
        let digits = s.trim().trim_start_matches("0o");
        if digits.is_empty() || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
            return Err(format!(
                "mode {} is not an octal number like \"0644\"",
                crate::util::text::q(s)
            ));
        }
        let v = u32::from_str_radix(digits, 8)
            .map_err(|_| format!("mode {} is too large", crate::util::text::q(s)))?;
        Self::checked(v as i64)
    }

    /// Checks an integer mode. A three-digit decimal integer above 0o777 that looks octal
    /// (`mode = 644`) is a mistake: it would set the sticky bit and odd permissions. Refuse
    /// it with the fix. (`420`, which is `0o644`, cannot be told from a typo, hence the
    /// advice to write modes as strings.)
    pub fn from_int(v: i64) -> Result<FileMode, String> {
        let looks_octal = v.to_string().chars().all(|c| ('0'..='7').contains(&c));
        if v > 0o777 && v <= 777 && looks_octal {
            return Err(format!(
                "mode = {v} is a decimal number ({v:#o}); write mode = \"{v:04}\" or mode = 0o{v}"
            ));
        }
        Self::checked(v)
    }

    fn checked(v: i64) -> Result<FileMode, String> {
        if !(0..=0o7777).contains(&v) {
            return Err(format!("mode {v:#o} is out of range (0..0o7777)"));
        }
        Ok(FileMode(v as u32))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FileMode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an octal string like \"0644\" or an integer like 0o644")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FileMode, E> {
                FileMode::from_int(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FileMode, E> {
                FileMode::from_int(i64::try_from(v).unwrap_or(i64::MAX)).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileMode, E> {
                FileMode::parse_octal(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}
