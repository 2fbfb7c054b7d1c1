//! Rendering a node config into the files the device reads from the boot partition
//! (`edgeimg/...`, see the device contract). The device only sources shell variables, so
//! every value goes through [`shell_quote`], which is safe for any text without NUL bytes.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::tree::{Tree, TreeError};

use super::{NodeConfig, NodeError, MAX_TOTAL_BYTES};

use super::contract::BOOT_DIR;

/// The files of one node, as `(path under the boot partition, content)`, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedNode {
    pub files: Vec<(String, Vec<u8>)>,
}

impl RenderedNode {
    /// The content of one rendered file, by its path under the boot partition.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c.as_slice())
    }

    /// The total size of all files.
    pub fn size(&self) -> usize {
        self.files.iter().map(|(_, c)| c.len()).sum()
    }

    /// The files as a tree (regular files 0644, directories 0755, mtime 0: the caller sets
    /// the build's timestamp).
    pub fn into_tree(self) -> Result<Tree, TreeError> {
        let mut t = Tree::new();
        for (path, content) in self.files {
            t.add_file(&path, content, 0o644)?;
        }
        Ok(t)
    }
}

/// Quotes `s` for POSIX sh: `'...'`, with each `'` written as `'\''`. Nothing inside single
/// quotes is expanded, so `$()`, backquotes, `\` and newlines come back unchanged.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl NodeConfig {
    /// Renders the node files for the boot partition: `edgeimg/node.toml`, `node.env`, and
    /// when used `token`, `k0s.yaml`, `authorized_keys`, `files/<n>`, `run_cmd.sh`,
    /// `boot_cmd.sh`. Validates first; reads the token and k0s config files.
    pub fn render(&self) -> Result<RenderedNode, NodeError> {
        self.check()?;
        let token = self.token()?;
        let k0s_yaml = self.k0s_config()?;

        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let put = |files: &mut BTreeMap<String, Vec<u8>>, name: &str, data: Vec<u8>| {
            files.insert(format!("{BOOT_DIR}/{name}"), data);
        };
        for (i, f) in self.files.iter().enumerate() {
            // `check` above refused content that does not decode.
            let bytes = f.bytes().map_err(|message| NodeError::Invalid {
                origin: self.origin().to_path_buf(),
                problems: vec![super::Problem {
                    key: format!("files[{i}].content"),
                    message,
                }],
            })?;
            put(&mut files, &format!("files/{i}"), bytes);
        }
        if !self.ssh.authorized_keys.is_empty() {
            put(
                &mut files,
                "authorized_keys",
                lines(&self.ssh.authorized_keys),
            );
        }
        if !self.run_cmd.is_empty() {
            put(
                &mut files,
                "run_cmd.sh",
                script(
                    "run once, on the first boot with this node config",
                    &self.run_cmd,
                ),
            );
        }
        if !self.boot_cmd.is_empty() {
            put(
                &mut files,
                "boot_cmd.sh",
                script("run on every boot, before k0s starts", &self.boot_cmd),
            );
        }
        if let Some(y) = k0s_yaml {
            put(&mut files, "k0s.yaml", y);
        }
        // What node.env's generation must also cover: content that lives in the other
        // files, so that changing a file or a command is a new generation too. The token is
        // left out: the device deletes it from the boot partition.
        let content_digest = digest_files(&files);
        put(
            &mut files,
            "node.env",
            self.node_env(token.is_some(), &content_digest).into_bytes(),
        );
        put(&mut files, "node.toml", self.boot_toml()?.into_bytes());
        if let Some(t) = token {
            put(&mut files, "token", format!("{t}\n").into_bytes());
        }
        // Like the token, left out of the generation: the device moves them off the FAT.
        for (rel, data) in &self.secrets.data_files {
            put(
                &mut files,
                &format!("{}/{rel}", super::contract::K0S_DATA_FILES),
                data.clone(),
            );
        }

        let rendered = RenderedNode {
            files: files.into_iter().collect(),
        };
        if rendered.size() > MAX_TOTAL_BYTES {
            return Err(NodeError::TooLarge {
                size: rendered.size(),
                limit: MAX_TOTAL_BYTES,
            });
        }
        Ok(rendered)
    }

    /// `node.env`: one `KEY='value'` line a key, in a fixed order, `CONFIG_GENERATION` last
    /// (the sha256 of every line before it, i.e. of the file without that line).
    fn node_env(&self, has_token: bool, content_digest: &str) -> String {
        let k = &self.k0s;
        let net = &self.network;
        let wifi = self.wifi.clone().unwrap_or_default();
        let quoted_args: Vec<String> = k.args.iter().map(|a| shell_quote(a)).collect();
        let labels: Vec<String> = k.labels.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut vars: Vec<(String, String)> = vec![
            (
                "NODE_HOSTNAME".into(),
                self.hostname.clone().unwrap_or_default(),
            ),
            (
                "NODE_ROLE".into(),
                k.role.map(|r| r.to_string()).unwrap_or_default(),
            ),
            ("K0S_ARGS".into(), quoted_args.join(" ")),
            ("K0S_LABELS".into(), labels.join(",")),
            ("K0S_TAINTS".into(), k.taints.join(",")),
            ("NET_MODE".into(), net.mode.as_str().into()),
            (
                "NET_ADDRESS".into(),
                net.address.clone().unwrap_or_default(),
            ),
            (
                "NET_GATEWAY".into(),
                net.gateway.clone().unwrap_or_default(),
            ),
            ("NET_DNS".into(), net.dns.join(" ")),
            ("NTP_SERVERS".into(), self.time.servers().join(" ")),
            (
                "TIMEZONE".into(),
                self.time.timezone.clone().unwrap_or_default(),
            ),
            ("WIFI_SSID".into(), wifi.ssid.clone()),
            // The PMK, never the passphrase (see `wifi.rs`).
            ("WIFI_PSK".into(), wifi.device_psk().unwrap_or_default()),
            ("WIFI_COUNTRY".into(), wifi.country.unwrap_or_default()),
            ("HAS_TOKEN".into(), u8::from(has_token).to_string()),
            (
                "HAS_SSH_KEYS".into(),
                u8::from(!self.ssh.authorized_keys.is_empty()).to_string(),
            ),
            ("FILES_COUNT".into(), self.files.len().to_string()),
            (
                "STORAGE_DEVICE".into(),
                self.storage.device.clone().unwrap_or_default(),
            ),
            (
                "INSTALL_DEVICE".into(),
                self.install.device.clone().unwrap_or_default(),
            ),
            (
                "INSTALL_WIPE".into(),
                u8::from(self.install.wipe).to_string(),
            ),
        ];
        // Only when set, so that node.env of a config without it stays as it was.
        if let Some(t) = self.update.trial_timeout {
            vars.push(("UPDATE_TRIAL_TIMEOUT".into(), t.to_string()));
        }
        if let Some(u) = &self.update.url {
            vars.push(("UPDATE_URL".into(), u.clone()));
        }
        if let Some(i) = self.update.check_interval {
            vars.push(("UPDATE_CHECK_INTERVAL".into(), i.to_string()));
        }
        if let Some(w) = self.update.watchdog {
            vars.push(("UPDATE_WATCHDOG".into(), w.to_string()));
        }
        for (i, f) in self.files.iter().enumerate() {
            vars.push((format!("FILE_{i}_PATH"), f.path.clone()));
            vars.push((format!("FILE_{i}_MODE"), f.mode.to_string()));
            // Only when set, so that node.env (and its generation) of a config without them
            // stays as it was.
            if let Some(o) = &f.owner {
                vars.push((format!("FILE_{i}_OWNER"), o.clone()));
            }
            if f.append {
                vars.push((format!("FILE_{i}_APPEND"), "1".into()));
            }
            if f.defer {
                vars.push((format!("FILE_{i}_DEFER"), "1".into()));
            }
        }
        vars.push(("CONTENT_SHA256".into(), content_digest.to_string()));

        let mut out =
            String::from("# edgeimg node config for the device (sourced by its boot scripts).\n");
        out.push_str("# Generated from node.toml: change it with `edgeimg configure`.\n");
        for (k, v) in vars {
            out.push_str(&format!("{k}={}\n", shell_quote(&v)));
        }
        let generation = hex::encode(Sha256::digest(out.as_bytes()));
        out.push_str(&format!("CONFIG_GENERATION='{generation}'\n"));
        out
    }

    /// The effective config as TOML for people and `inspect`. Host paths do not belong on
    /// the device: the token file is dropped (the token sits in `token` until the device
    /// takes it) and the k0s config points at its copy next to this file. A Wi-Fi
    /// passphrase is replaced by its PMK, as in node.env.
    fn boot_toml(&self) -> Result<String, NodeError> {
        let mut shown = self.clone();
        shown.k0s.token_file = None;
        // The card holds the key the device uses, never the passphrase it came from.
        if let Some(w) = &mut shown.wifi {
            w.psk = w.device_psk();
        }
        if shown.k0s.config_file.is_some() {
            shown.k0s.config_file = Some("k0s.yaml".into());
        }
        let body = toml::to_string(&shown).map_err(|e| NodeError::Serialize(e.to_string()))?;
        Ok(format!(
            "# Node config of this image, as applied by edgeimg (the device reads node.env).\n\
             # Change it with: edgeimg configure IMAGE-or-DEVICE --node node.toml\n{body}"
        ))
    }
}

fn lines(items: &[String]) -> Vec<u8> {
    let mut s = items.join("\n");
    s.push('\n');
    s.into_bytes()
}

/// A `sh` script running the commands in order; the first failing command stops it (its
/// exit status is what the device reports).
fn script(what: &str, cmds: &[String]) -> Vec<u8> {
    let mut s = format!("#!/bin/sh\n# edgeimg node commands, {what}.\nset -e\n");
    for c in cmds {
        s.push_str(c);
        s.push('\n');
    }
    s.into_bytes()
}

fn digest_files(files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    for (path, content) in files {
        h.update(path.as_bytes());
        h.update([0]);
        h.update((content.len() as u64).to_le_bytes());
        h.update(content);
    }
    hex::encode(h.finalize())
}

/// Reads back a `node.env` written by [`NodeConfig::render`] (for `inspect` and
/// `configure`): `KEY='value'` lines with `'\''` escapes; comments and blank lines skipped.
pub fn parse_node_env(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    let mut line_no = 1;
    while !rest.is_empty() {
        if rest.starts_with('\n') || rest.starts_with('#') {
            let end = rest.find('\n').map(|i| i + 1).unwrap_or(rest.len());
            rest = &rest[end..];
            line_no += 1;
            continue;
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("line {line_no}: expected KEY='value'"))?;
        let key = &rest[..eq];
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {line_no}: {key:?} is not a variable name"));
        }
        rest = &rest[eq + 1..];
        let mut value = String::new();
        loop {
            if let Some(r) = rest.strip_prefix('\'') {
                let end = r
                    .find('\'')
                    .ok_or_else(|| format!("line {line_no}: unterminated quote in {key}"))?;
                value.push_str(&r[..end]);
                line_no += r[..end].matches('\n').count();
                rest = &r[end + 1..];
            } else if let Some(r) = rest.strip_prefix("\\'") {
                value.push('\'');
                rest = r;
            } else {
                break;
            }
        }
        match rest.chars().next() {
            None => {}
            Some('\n') => {
                rest = &rest[1..];
                line_no += 1;
            }
            Some(c) => {
                return Err(format!(
                    "line {line_no}: unexpected {c:?} after the value of {key}"
                ))
            }
        }
        out.insert(key.to_string(), value);
    }
    Ok(out)
}
