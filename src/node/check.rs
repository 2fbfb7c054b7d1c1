//! Semantic validation of a parsed node config. Every rule reports a [`Problem`] naming the
//! key, and all problems are collected so a user fixes them in one round.

use std::net::IpAddr;

use super::schema::{NetMode, WifiConfig};
use super::{NodeConfig, Problem, MAX_FILE_BYTES};
use crate::util::text::q;

/// Where `[[files]]` may write: the writable parts of the device (/etc is an overlay, /var
/// is on the data partition; /usr/local and /opt are overlaid by the initramfs as well).
pub const ALLOWED_FILE_ROOTS: [&str; 4] = ["/etc", "/var", "/usr/local", "/opt"];

/// k0s flags edgeimg sets itself; giving them again would fight the device scripts.
const MANAGED_K0S_FLAGS: [&str; 5] = [
    "--data-dir",
    "--token-file",
    "--config",
    "--single",
    "--enable-worker",
];

const SSH_KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

#[derive(Default)]
pub(super) struct Report {
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl Report {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

pub(super) fn check(cfg: &NodeConfig) -> Report {
    let mut r = Report::default();
    if let Some(h) = &cfg.hostname {
        if let Err(m) = hostname(h) {
            r.problem("hostname", m);
        }
    }
    check_k0s(cfg, &mut r);
    check_network(cfg, &mut r);
    for (i, key) in cfg.ssh.authorized_keys.iter().enumerate() {
        if let Err(m) = ssh_key(key) {
            r.problem(format!("ssh.authorized_keys[{i}]"), m);
        }
    }
    check_time(cfg, &mut r);
    if let Err(m) = cfg.storage.check() {
        r.problem("storage.device", m);
    }
    if let Err((field, m)) = cfg.update.check() {
        r.problem(field, m);
    }
    if let Err(m) = cfg.install.check() {
        r.problem("install.device", m);
    }
    if let Some(w) = &cfg.wifi {
        check_wifi(w, &mut r);
    }
    check_files(cfg, &mut r);
    for (i, a) in cfg.boot.kernel_args.iter().enumerate() {
        if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
            r.problem(
                format!("boot.kernel_args[{i}]"),
                "must be one word (no spaces or control characters): give each argument as its own string",
            );
        }
    }
    for (i, l) in cfg.boot.config_txt.iter().enumerate() {
        if l.trim().is_empty() || l.chars().any(|c| c.is_control()) {
            r.problem(
                format!("boot.config_txt[{i}]"),
                "must be one non-empty line (give each config.txt line as its own string)",
            );
        }
    }
    for (name, cmds) in [("run_cmd", &cfg.run_cmd), ("boot_cmd", &cfg.boot_cmd)] {
        for (i, c) in cmds.iter().enumerate() {
            if c.trim().is_empty() {
                r.problem(format!("{name}[{i}]"), "is empty");
            } else if c.contains('\0') {
                r.problem(format!("{name}[{i}]"), "contains a NUL byte");
            } else if c.len() > MAX_FILE_BYTES {
                r.problem(
                    format!("{name}[{i}]"),
                    format!("is longer than {MAX_FILE_BYTES} bytes"),
                );
            }
        }
    }
    r
}

/// An RFC 1123 label, lower case (Kubernetes node names are lower case).
pub fn hostname(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 63 {
        return Err(format!(
            "{} must be 1 to 63 characters long (it is {} bytes)",
            q(h),
            h.len()
        ));
    }
    if !h
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!("{} may contain only a-z, 0-9 and '-' (lower case: it is also the Kubernetes node name)", q(h)));
    }
    if h.starts_with('-') || h.ends_with('-') {
        return Err(format!("{} must not start or end with '-'", q(h)));
    }
    Ok(())
}

fn check_k0s(cfg: &NodeConfig, r: &mut Report) {
    let k = &cfg.k0s;
    for (i, a) in k.args.iter().enumerate() {
        let key = format!("k0s.args[{i}]");
        if a.is_empty() || a.contains(['\n', '\r', '\0']) {
            r.problem(key, "must be a non-empty single line");
        } else if let Some(f) = MANAGED_K0S_FLAGS
            .iter()
            .find(|f| a == *f || a.starts_with(&format!("{f}=")))
        {
            r.problem(
                key,
                format!("{f} is set by edgeimg from the role and files; remove it"),
            );
        }
    }
    for (name, value) in &k.labels.0 {
        if let Err(m) = label(name, value) {
            r.problem(format!("k0s.labels.{name}"), m);
        }
    }
    for (i, t) in k.taints.iter().enumerate() {
        if let Err(m) = taint(t) {
            r.problem(format!("k0s.taints[{i}]"), m);
        }
    }
    if let Some(path) = &k.token_file {
        match cfg.token() {
            Err(e) => r.problem("k0s.token_file", e.to_string()),
            Ok(_) => {
                if let Some(w) = readable_by_others(path) {
                    r.warnings.push(format!(
                        "k0s.token_file {}: {w}; run chmod 600 on it",
                        path.display()
                    ));
                }
            }
        }
    } else if k.role.is_some_and(|role| role.needs_token()) {
        r.warnings.push(format!(
            "k0s.role = \"{}\" without k0s.token_file: the node will wait for a token (add one later with `edgeimg configure --token-file`)",
            k.role.map(|x| x.to_string()).unwrap_or_default()
        ));
    }
    if k.config_file.is_some() {
        if let Err(e) = cfg.k0s_config() {
            r.problem("k0s.config_file", e.to_string());
        }
    }
}

#[cfg(unix)]
fn readable_by_others(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "is readable by group or others (mode {:04o})",
            mode & 0o7777
        )
    })
}

#[cfg(not(unix))]
fn readable_by_others(_: &std::path::Path) -> Option<String> {
    None
}

/// A Kubernetes label: key `[prefix/]name`, value empty or a name-like string, both <= 63.
fn label(key: &str, value: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.len() > 253 || dns_name(p).is_err() {
            return Err(format!(
                "label prefix {} must be a DNS subdomain like example.com",
                q(p)
            ));
        }
    }
    if name.is_empty() || !label_word(name) {
        return Err(format!(
            "label name {} must be 1-63 of A-Z a-z 0-9 - _ . starting and ending alphanumeric",
            q(name)
        ));
    }
    if !value.is_empty() && !label_word(value) {
        return Err(format!("label value {} must be empty or 1-63 of A-Z a-z 0-9 - _ . starting and ending alphanumeric", q(value)));
    }
    Ok(())
}

fn label_word(s: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && ends_ok(s.chars().next())
        && ends_ok(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `key[=value]:Effect`.
fn taint(t: &str) -> Result<(), String> {
    let Some((kv, effect)) = t.rsplit_once(':') else {
        return Err(format!(
            "taint {} must look like key=value:NoSchedule",
            q(t)
        ));
    };
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(format!(
            "taint effect {} must be NoSchedule, PreferNoSchedule or NoExecute",
            q(effect)
        ));
    }
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    label(k, v).map_err(|m| format!("taint {}: {m}", q(t)))
}

/// A DNS name (hostname or FQDN): dot-separated labels of a-z A-Z 0-9 '-'.
fn dns_name(s: &str) -> Result<(), String> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{} is not a valid host name", q(s)))
    }
}

/// `address/prefix`, returning the address.
pub fn cidr(s: &str) -> Result<IpAddr, String> {
    let bad = || {
        format!(
            "{} is not an address with a prefix length like 192.168.1.10/24",
            q(s)
        )
    };
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix == 0 || prefix > max {
        return Err(format!("{}: prefix length must be 1..{max}", q(s)));
    }
    Ok(addr)
}

fn check_network(cfg: &NodeConfig, r: &mut Report) {
    let n = &cfg.network;
    match n.mode {
        NetMode::Static => {
            let addr = match &n.address {
                None => {
                    r.problem(
                        "network.address",
                        "is required with mode = \"static\" (like \"192.168.1.10/24\")",
                    );
                    None
                }
                Some(a) => cidr(a).map_err(|m| r.problem("network.address", m)).ok(),
            };
            match &n.gateway {
                None => r.problem("network.gateway", "is required with mode = \"static\""),
                Some(g) => match g.parse::<IpAddr>() {
                    Err(_) => {
                        r.problem("network.gateway", format!("{} is not an IP address", q(g)))
                    }
                    Ok(gw) if addr.is_some_and(|a| a.is_ipv4() != gw.is_ipv4()) => r.problem(
                        "network.gateway",
                        "must be of the same IP version as network.address",
                    ),
                    Ok(_) => {}
                },
            }
        }
        NetMode::Dhcp => {
            if n.address.is_some() || n.gateway.is_some() {
                r.problem(
                    "network.mode",
                    "address and gateway are only used with mode = \"static\"",
                );
            }
        }
    }
    for (i, d) in n.dns.iter().enumerate() {
        if d.parse::<IpAddr>().is_err() {
            r.problem(
                format!("network.dns[{i}]"),
                format!("{} is not an IP address", q(d)),
            );
        }
    }
}

fn check_time(cfg: &NodeConfig, r: &mut Report) {
    for (i, s) in cfg.time.ntp.iter().flatten().enumerate() {
        if s.parse::<IpAddr>().is_err() {
            if let Err(m) = dns_name(s) {
                r.problem(format!("time.ntp[{i}]"), m);
            }
        }
    }
    if let Some(tz) = &cfg.time.timezone {
        let ok = !tz.is_empty()
            && tz.len() <= 64
            && !tz.starts_with('/')
            && !tz.split('/').any(|c| c.is_empty() || c == "." || c == "..")
            && tz
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
        if !ok {
            r.problem(
                "time.timezone",
                format!(
                    "{} is not a zone name like \"Europe/Berlin\" or \"UTC\"",
                    q(tz)
                ),
            );
        }
    }
}

fn check_wifi(w: &WifiConfig, r: &mut Report) {
    if w.ssid.is_empty() || w.ssid.len() > 32 || w.ssid.chars().any(|c| c.is_control()) {
        r.problem(
            "wifi.ssid",
            "must be 1 to 32 bytes without control characters",
        );
    }
    // Any text is carried exactly: the device gets the PMK (see `wifi.rs`), so quotes, `#`
    // and backslashes need no quoting, and UTF-8 is hashed as its bytes, as wpa_passphrase
    // does.
    if let Some(psk) = &w.psk {
        let pass = (8..=63).contains(&psk.len()) && !psk.chars().any(|c| c.is_control());
        if !super::wifi::is_raw_key(psk) && !pass {
            r.problem(
                "wifi.psk",
                format!(
                    "must be a passphrase of 8 to 63 bytes without control characters, or 64 hex \
                     digits (it is {} bytes; not shown: it is a secret)",
                    psk.len()
                ),
            );
        }
    }
    match &w.country {
        Some(c) if !(c.len() == 2 && c.chars().all(|c| c.is_ascii_uppercase())) => r.problem(
            "wifi.country",
            format!("{} is not a two-letter country code like \"DE\"", q(c)),
        ),
        Some(_) => {}
        None => r.warnings.push(
            "wifi.country is not set: the radio may use the most restrictive channels".into(),
        ),
    }
}

/// An absolute path under one of [`ALLOWED_FILE_ROOTS`], in normal form.
pub fn file_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{} must be an absolute path", q(p)));
    }
    let comps: Vec<&str> = p[1..].split('/').collect();
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(format!(
            "{} must be a plain path: no '..', '.', '//' or trailing '/'",
            q(p)
        ));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(format!("{} contains control characters", q(p)));
    }
    let under = ALLOWED_FILE_ROOTS.iter().any(|root| {
        p.strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
    });
    if !under {
        return Err(format!(
            "{} must be below one of {}",
            q(p),
            ALLOWED_FILE_ROOTS.join(", ")
        ));
    }
    if p.len() > 4096 {
        return Err("path is longer than 4096 bytes".into());
    }
    Ok(())
}

fn check_files(cfg: &NodeConfig, r: &mut Report) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, f) in cfg.files.iter().enumerate() {
        if let Err(m) = file_path(&f.path) {
            r.problem(format!("files[{i}].path"), m);
        } else if !seen.insert(f.path.as_str()) && !f.append {
            r.problem(
                format!("files[{i}].path"),
                format!(
                    "{} is written by an earlier [[files]] entry too",
                    q(&f.path)
                ),
            );
        }
        match f.bytes() {
            Err(m) => r.problem(format!("files[{i}].content"), m),
            Ok(b) if b.len() > MAX_FILE_BYTES => r.problem(
                format!("files[{i}].content"),
                format!("is longer than {MAX_FILE_BYTES} bytes"),
            ),
            Ok(_) => {}
        }
        if let Some(o) = &f.owner {
            if let Err(m) = owner(o) {
                r.problem(format!("files[{i}].owner"), m);
            }
        }
        if f.mode.0 > 0o7777 {
            r.problem(format!("files[{i}].mode"), "must be at most 0o7777");
        }
    }
}

/// `user`, `user:group` or `:group`: names as `useradd` takes them (or numeric ids), so that
/// the device's `chown` gets one argument it cannot read as an option.
pub fn owner(o: &str) -> Result<(), String> {
    let name = |n: &str| {
        !n.is_empty()
            && n.len() <= 32
            && !n.starts_with('-')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let ok = match o.split_once(':') {
        Some(("", g)) => name(g),
        Some((u, g)) => name(u) && name(g),
        None => name(o),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not `user`, `user:group` or `:group` (letters, digits, _ - .)",
            q(o)
        ))
    }
}

/// Whether `text` holds a private key: a PEM `-----BEGIN ... PRIVATE KEY-----` line (OpenSSH,
/// PKCS#1, PKCS#8) or a PuTTY key file header.
pub fn looks_like_private_key(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        (l.starts_with("-----BEGIN ") && l.contains("PRIVATE KEY"))
            || l.starts_with("PuTTY-User-Key-File-")
    })
}

/// `type base64 [comment]`: the type is known, the blob decodes and names the same type.
/// No error shows the line: what is not a public key may be a line of a private one.
pub fn ssh_key(line: &str) -> Result<(), String> {
    if looks_like_private_key(line) {
        return Err(
            "is the first line of a private key: give the public key (the .pub file, such as \
             ~/.ssh/id_ed25519.pub); a private key must never leave its machine"
                .into(),
        );
    }
    if line.contains(['\n', '\r', '\0']) {
        return Err("holds a line break: give one key per list item, on a single line".into());
    }
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(
            "does not look like a public key (\"ssh-ed25519 AAAA... comment\"; the text is not \
             shown, in case it is part of a private key)"
                .into(),
        );
    };
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(format!(
            "does not start with a public key type ({}): private keys never belong here (the \
             text is not shown, in case it is part of one)",
            SSH_KEY_TYPES.join(", ")
        ));
    }
    let data = base64_decode(blob)
        .ok_or_else(|| format!("the {kind} key's data is not valid base64 (truncated paste?)"))?;
    if data.len() < 4 {
        return Err(format!("the {kind} key's data is too short"));
    }
    let n = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if data.get(4..4 + n) != Some(kind.as_bytes()) {
        return Err(format!(
            "the key data does not hold a {kind} key (type and data do not match)"
        ));
    }
    Ok(())
}

/// Standard base64 with padding; `None` on any invalid character or length.
pub(super) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (ci, chunk) in b.chunks(4).enumerate() {
        let last = ci == b.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut acc = 0u32;
        for &c in &chunk[..4 - pad] {
            acc = acc << 6 | val(c)?;
        }
        acc <<= 6 * pad as u32;
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip_of_known_values() {
        assert_eq!(base64_decode("TWFu").unwrap(), b"Man");
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode("TQ==").unwrap(), b"M");
        assert!(base64_decode("TQ=").is_none());
        assert!(base64_decode("T!==").is_none());
        assert!(base64_decode("TQ==TWFu").is_none());
    }

    #[test]
    fn hostnames() {
        assert!(hostname("edge-01").is_ok());
        assert!(hostname(&"a".repeat(63)).is_ok());
        assert!(hostname(&"a".repeat(64)).is_err());
        assert!(hostname("Edge").is_err());
        assert!(hostname("-a").is_err());
        assert!(hostname("a.b").is_err());
        assert!(hostname("").is_err());
    }

    #[test]
    fn file_paths() {
        assert!(file_path("/etc/foo.conf").is_ok());
        assert!(file_path("/usr/local/bin/x").is_ok());
        assert!(file_path("/opt/a/b").is_ok());
        for bad in [
            "/etc",
            "/etc/",
            "etc/x",
            "/etc/../root/x",
            "/etcx/y",
            "/usr/bin/x",
            "/etc//x",
            "/var/./x",
        ] {
            assert!(file_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_and_taints() {
        assert!(label("example.com/zone", "a-1").is_ok());
        assert!(label("zone", "").is_ok());
        assert!(label("zone", "a,b").is_err());
        assert!(label("-zone", "a").is_err());
        assert!(taint("dedicated=edge:NoSchedule").is_ok());
        assert!(taint("gpu:NoExecute").is_ok());
        assert!(taint("gpu:Never").is_err());
        assert!(taint("gpu").is_err());
    }

    #[test]
    fn cidrs() {
        assert!(cidr("192.168.1.10/24").is_ok());
        assert!(cidr("fd00::5/64").is_ok());
        assert!(cidr("192.168.1.10").is_err());
        assert!(cidr("192.168.1.10/33").is_err());
        assert!(cidr("300.1.1.1/24").is_err());
    }
}
