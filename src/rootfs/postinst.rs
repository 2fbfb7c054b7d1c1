//! What Debian's maintainer scripts would have done, done on the tree.
//!
//! edgeimg never runs maintainer scripts (they need root, a chroot and the target's
//! architecture). The few effects a node needs are reproduced here, deterministically:
//! merged-/usr links, users and groups, the CA bundle, busybox applet links, mount points.
//! Module index files are `kmod`'s job.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use crate::tree::{Content, Entry, Kind, Tree, TreePath};

/// A system account a role needs (k0s's optional etcd, kube-apiserver... users).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// Where an applet link goes, relative to the root: `"usr/bin/sh"`.
pub type Applet = String;

const PASSWD_MASTER: &str = "usr/share/base-passwd/passwd.master";
const GROUP_MASTER: &str = "usr/share/base-passwd/group.master";

/// Used when base-passwd is not installed: root, and nobody/nogroup for daemons.
const MINIMAL_PASSWD: &str =
    "root:*:0:0:root:/root:/bin/sh\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const MINIMAL_GROUP: &str = "root:*:0:\nnogroup:*:65534:\n";

/// Ensures `bin -> usr/bin`, `sbin -> usr/sbin`, `lib -> usr/lib` (and `lib64 -> usr/lib64`
/// when asked). Call it before unpacking packages, so that their `lib/...` entries land in
/// `usr/lib/...`. A real directory already at one of these places is merged into its /usr
/// counterpart first (what usrmerge does). A tree whose `usr/bin` (etc.) is not a directory
/// is left as it is for that link: the unpacking that follows then reports the conflict.
pub fn merged_usr(tree: &mut Tree, arch_lib64: bool) {
    let mut links = vec![("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")];
    if arch_lib64 {
        links.push(("lib64", "usr/lib64"));
    }
    for (link, target) in links {
        // Errors only come from a tree that already breaks the layout; see above.
        let _ = merge_one(tree, link, target);
    }
}

fn merge_one(tree: &mut Tree, link: &str, target: &str) -> Result<()> {
    let target_path = TreePath::new(target)?;
    tree.mkdir_p(&target_path)?;
    match tree.get(link).map(|e| e.kind.clone()) {
        Some(Kind::Symlink(t)) if TreePath::new(&t)? == target_path => return Ok(()),
        Some(Kind::Dir) => {
            let prefix = format!("{link}/");
            let moved: Vec<(String, Entry)> = tree
                .iter()
                .filter_map(|(p, e)| {
                    p.as_str()
                        .strip_prefix(&prefix)
                        .map(|rest| (rest.to_string(), e.clone()))
                })
                .collect();
            tree.remove(link);
            for (rest, e) in moved {
                tree.insert(&target_path.join(&rest)?, e)?;
            }
        }
        _ => {}
    }
    tree.add_symlink(link, target)?;
    Ok(())
}

/// Writes `/etc/passwd`, `/etc/group`, `/etc/shadow`, `/etc/gshadow` from base-passwd's master
/// files (or a minimal root/nobody set), then appends `extra_users` (by uid, then name) with a
/// group of their own gid. Every password is locked (`*`): nodes are reached with SSH keys.
/// root's shell falls back to `/bin/sh` when the master names one the image lacks (bash).
pub fn passwd_and_group(tree: &mut Tree, extra_users: &[SystemUser]) -> Result<()> {
    let passwd_src = read_text(tree, PASSWD_MASTER)?.unwrap_or_else(|| MINIMAL_PASSWD.to_string());
    let group_src = read_text(tree, GROUP_MASTER)?.unwrap_or_else(|| MINIMAL_GROUP.to_string());
    let mut users = parse_colon_file(&passwd_src, 7, PASSWD_MASTER)?;
    let mut groups = parse_colon_file(&group_src, 4, GROUP_MASTER)?;

    for u in users.iter_mut().filter(|u| u[2] == "0") {
        if !shell_exists(tree, &u[6]) {
            u[6] = "/bin/sh".to_string();
        }
    }

    let mut extra: Vec<&SystemUser> = extra_users.iter().collect();
    extra.sort_by(|a, b| (a.uid, &a.name).cmp(&(b.uid, &b.name)));
    for x in extra {
        check_user(x)?;
        if let Some(existing) = users.iter().find(|u| u[0] == x.name) {
            if existing[2] != x.uid.to_string() {
                bail!(
                    "system user {}: uid {} asked, but the base passwd file has uid {}",
                    x.name,
                    x.uid,
                    existing[2]
                );
            }
            continue;
        }
        if let Some(clash) = users.iter().find(|u| u[2] == x.uid.to_string()) {
            bail!(
                "system user {}: uid {} is already {}'s: pick another uid in the profile",
                x.name,
                x.uid,
                clash[0]
            );
        }
        users.push(vec![
            x.name.clone(),
            "*".into(),
            x.uid.to_string(),
            x.gid.to_string(),
            x.name.clone(),
            x.home.clone(),
            x.shell.clone(),
        ]);
        if !groups.iter().any(|g| g[2] == x.gid.to_string()) {
            groups.push(vec![
                x.name.clone(),
                "*".into(),
                x.gid.to_string(),
                String::new(),
            ]);
        }
    }

    // Passwords live in the shadow files, locked; the public files say "x".
    let passwd: String = users
        .iter()
        .map(|u| format!("{}:x:{}\n", u[0], u[2..].join(":")))
        .collect();
    let shadow: String = users
        .iter()
        .map(|u| format!("{}:*::0:99999:7:::\n", u[0]))
        .collect();
    let group: String = groups
        .iter()
        .map(|g| format!("{}:x:{}\n", g[0], g[2..].join(":")))
        .collect();
    let gshadow: String = groups
        .iter()
        .map(|g| format!("{}:*::{}\n", g[0], g[3]))
        .collect();
    tree.add_file("etc/passwd", passwd, 0o644)?;
    tree.add_file("etc/group", group, 0o644)?;
    // shadow group (42) as Debian has it when base-passwd provides it; root-only otherwise.
    let shadow_gid = groups
        .iter()
        .find(|g| g[0] == "shadow")
        .and_then(|g| g[2].parse().ok())
        .unwrap_or(0);
    tree.insert(
        &TreePath::new("etc/shadow")?,
        Entry::file(Content::bytes(shadow), 0o640).owned(0, shadow_gid),
    )?;
    tree.insert(
        &TreePath::new("etc/gshadow")?,
        Entry::file(Content::bytes(gshadow), 0o640).owned(0, shadow_gid),
    )?;
    if !tree.contains("etc/shells") {
        tree.add_file("etc/shells", "/bin/sh\n/usr/bin/sh\n", 0o644)?;
    }
    Ok(())
}

fn check_user(u: &SystemUser) -> Result<()> {
    let ok = |s: &str| !s.is_empty() && !s.contains([':', '\n']);
    if !ok(&u.name) || !ok(&u.home) || !ok(&u.shell) {
        bail!(
            "system user {:?}: name, home and shell must be non-empty and hold no ':' or newline",
            u.name
        );
    }
    Ok(())
}

fn shell_exists(tree: &Tree, shell: &str) -> bool {
    let Ok(p) = TreePath::new(shell) else {
        return false;
    };
    tree.resolve_all(&p)
        .ok()
        .and_then(|r| tree.get_path(&r).cloned())
        .is_some_and(|e| matches!(e.kind, Kind::File(_)))
}

fn read_text(tree: &Tree, path: &str) -> Result<Option<String>> {
    match tree.get(path).map(|e| &e.kind) {
        Some(Kind::File(c)) => {
            let data = c.read_all().with_context(|| format!("reading {path}"))?;
            Ok(Some(String::from_utf8_lossy(&data).into_owned()))
        }
        _ => Ok(None),
    }
}

/// `a:b:c` lines with exactly `fields` fields; comments and blank lines are skipped.
fn parse_colon_file(text: &str, fields: usize, name: &str) -> Result<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<String> = line.split(':').map(String::from).collect();
        if parts.len() != fields {
            bail!(
                "{name}:{}: expected {fields} ':'-separated fields, found {}",
                i + 1,
                parts.len()
            );
        }
        out.push(parts);
    }
    Ok(out)
}

/// Concatenates the certificates under `usr/share/ca-certificates/` (`mozilla/*.crt`, sorted,
/// each ending in a newline) into `etc/ssl/certs/ca-certificates.crt` (0644), as
/// update-ca-certificates does. Returns how many certificates went in; with none, no bundle
/// is written.
pub fn ca_bundle(tree: &mut Tree) -> Result<usize> {
    let certs: Vec<(TreePath, Vec<u8>)> = tree
        .iter()
        .filter(|(p, _)| {
            p.as_str().starts_with("usr/share/ca-certificates/") && p.as_str().ends_with(".crt")
        })
        .filter_map(|(p, e)| match &e.kind {
            Kind::File(c) => Some(
                c.read_all()
                    .map(|d| (p.clone(), d.to_vec()))
                    .with_context(|| format!("reading {p}")),
            ),
            _ => None,
        })
        .collect::<Result<_>>()?;
    if certs.is_empty() {
        return Ok(0);
    }
    let mut bundle = Vec::new();
    for (_, data) in &certs {
        bundle.extend_from_slice(data);
        if !data.ends_with(b"\n") {
            bundle.push(b'\n');
        }
    }
    tree.add_file("etc/ssl/certs/ca-certificates.crt", bundle, 0o644)?;
    Ok(certs.len())
}

/// Links each applet path (`usr/bin/sh`) to `busybox` (`/usr/bin/busybox`). A regular file, or
/// a symlink that leads somewhere, already at that path belongs to another package and is
/// kept: those applets are returned. A dangling symlink (an alternatives link no postinst
/// made) is replaced.
pub fn busybox_links(tree: &mut Tree, busybox: &str, applets: &[Applet]) -> Result<Vec<String>> {
    let bb = TreePath::new(busybox)?;
    if !matches!(tree.get_path(&bb).map(|e| &e.kind), Some(Kind::File(_))) {
        bail!(
            "{busybox} is not in the root filesystem: add busybox-static to the profile's packages"
        );
    }
    let mut skipped = Vec::new();
    let mut done = BTreeSet::new();
    for applet in applets {
        let p =
            TreePath::strict(applet).with_context(|| format!("busybox applet path {applet:?}"))?;
        if p.is_root() {
            bail!("busybox applet path {applet:?} is empty");
        }
        let at = tree.resolve_parents(&p)?;
        if at == bb || !done.insert(at.clone()) {
            continue;
        }
        match tree.get_path(&at).map(|e| &e.kind) {
            None => {}
            Some(Kind::Symlink(t)) if t == busybox => continue,
            Some(Kind::Symlink(_)) if !leads_somewhere(tree, &at) => {}
            Some(_) => {
                skipped.push(applet.clone());
                continue;
            }
        }
        tree.insert(&at, Entry::symlink(busybox))?;
    }
    Ok(skipped)
}

fn leads_somewhere(tree: &Tree, link: &TreePath) -> bool {
    tree.resolve_all(link).ok().is_some_and(|r| {
        tree.get_path(&r)
            .is_some_and(|e| !matches!(e.kind, Kind::Symlink(_)))
    })
}

/// Empty mount-point directories at the top of the tree (0755; `tmp` 1777). Existing
/// directories keep their content.
pub fn mount_points(tree: &mut Tree, names: &[&str]) -> Result<()> {
    for name in names {
        let p = TreePath::strict(name)?;
        let mode = if p.as_str() == "tmp" { 0o1777 } else { 0o755 };
        match tree.get_path(&p) {
            Some(e) if e.is_dir() => {
                if p.as_str() == "tmp" {
                    let mut e = e.clone();
                    e.mode = mode;
                    tree.insert(&p, e)?;
                }
            }
            Some(_) => bail!("mount point /{name} is not a directory in the root filesystem (a package installed a file there)"),
            None => {
                tree.insert(&p, Entry::dir(mode))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &Tree, p: &str) -> String {
        String::from_utf8(t.read(p).unwrap_or_else(|| panic!("{p} missing")).to_vec()).unwrap()
    }

    #[test]
    fn merged_usr_links_and_merges_existing_dirs() {
        let mut t = Tree::new();
        t.add_file("bin/old", b"x".to_vec(), 0o755).unwrap();
        merged_usr(&mut t, true);
        for (l, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            assert!(
                matches!(&t.get(l).unwrap().kind, Kind::Symlink(s) if s == target),
                "{l}"
            );
            assert!(t.get(target).unwrap().is_dir());
        }
        assert!(
            t.get("usr/bin/old").is_some(),
            "bin's content was not merged"
        );
        // Packages unpacked afterwards land in /usr.
        let at = t
            .add_file("lib/modules/k/x.ko", b"".to_vec(), 0o644)
            .unwrap();
        assert_eq!(at.as_str(), "usr/lib/modules/k/x.ko");
        let mut t2 = Tree::new();
        merged_usr(&mut t2, false);
        assert!(t2.get("lib64").is_none());
        merged_usr(&mut t2, false); // idempotent
        assert!(matches!(&t2.get("bin").unwrap().kind, Kind::Symlink(_)));
    }

    #[test]
    fn passwd_from_base_passwd_masters_with_extra_users() {
        let mut t = Tree::new();
        t.add_file(
            PASSWD_MASTER,
            "root:*:0:0:root:/root:/bin/bash\ndaemon:*:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
            0o644,
        )
        .unwrap();
        t.add_file(
            GROUP_MASTER,
            "root:*:0:\ndaemon:*:1:\nshadow:*:42:\n",
            0o644,
        )
        .unwrap();
        let users = [
            SystemUser {
                name: "kube-apiserver".into(),
                uid: 991,
                gid: 991,
                home: "/".into(),
                shell: "/usr/sbin/nologin".into(),
            },
            SystemUser {
                name: "etcd".into(),
                uid: 990,
                gid: 990,
                home: "/var/lib/k0s/etcd".into(),
                shell: "/usr/sbin/nologin".into(),
            },
        ];
        passwd_and_group(&mut t, &users).unwrap();
        let passwd = text(&t, "etc/passwd");
        assert_eq!(
            passwd,
            "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
             etcd:x:990:990:etcd:/var/lib/k0s/etcd:/usr/sbin/nologin\n\
             kube-apiserver:x:991:991:kube-apiserver:/:/usr/sbin/nologin\n"
        );
        let shadow = text(&t, "etc/shadow");
        assert!(shadow.starts_with("root:*:"), "{shadow}");
        assert!(
            shadow.lines().all(|l| l.split(':').nth(1) == Some("*")),
            "a password is not locked: {shadow}"
        );
        assert_eq!(t.get("etc/shadow").unwrap().mode, 0o640);
        assert_eq!(t.get("etc/shadow").unwrap().gid, 42);
        let group = text(&t, "etc/group");
        assert!(
            group.ends_with("etcd:x:990:\nkube-apiserver:x:991:\n"),
            "{group}"
        );
        assert_eq!(text(&t, "etc/gshadow").lines().count(), 5);
        // Same input, same bytes; the same users again add nothing.
        passwd_and_group(&mut t, &users).unwrap();
        assert_eq!(text(&t, "etc/passwd"), passwd);
        // A uid clash is refused.
        let clash = [SystemUser {
            name: "x".into(),
            uid: 1,
            gid: 1,
            home: "/".into(),
            shell: "/bin/sh".into(),
        }];
        assert!(passwd_and_group(&mut t, &clash)
            .unwrap_err()
            .to_string()
            .contains("daemon"));
    }

    #[test]
    fn passwd_without_base_passwd_is_minimal_and_keeps_existing_shell() {
        let mut t = Tree::new();
        passwd_and_group(&mut t, &[]).unwrap();
        assert!(text(&t, "etc/passwd").starts_with("root:x:0:0:root:/root:/bin/sh\n"));
        assert!(text(&t, "etc/group").contains("nogroup:x:65534:"));
        assert!(text(&t, "etc/shells").contains("/bin/sh"));
        let mut t = Tree::new();
        t.add_file("usr/bin/bash", b"elf".to_vec(), 0o755).unwrap();
        t.add_symlink("bin", "usr/bin").unwrap();
        t.add_file(PASSWD_MASTER, "root:*:0:0:root:/root:/bin/bash\n", 0o644)
            .unwrap();
        passwd_and_group(&mut t, &[]).unwrap();
        assert!(
            text(&t, "etc/passwd").contains("/bin/bash"),
            "bash exists, root keeps it"
        );
    }

    #[test]
    fn ca_bundle_concatenates_sorted_certs_with_newlines() {
        let mut t = Tree::new();
        assert_eq!(ca_bundle(&mut t).unwrap(), 0);
        assert!(t.get("etc/ssl/certs/ca-certificates.crt").is_none());
        t.add_file(
            "usr/share/ca-certificates/mozilla/B_Root.crt",
            b"-----B-----".to_vec(),
            0o644,
        )
        .unwrap();
        t.add_file(
            "usr/share/ca-certificates/mozilla/A_Root.crt",
            b"-----A-----\n".to_vec(),
            0o644,
        )
        .unwrap();
        t.add_file(
            "usr/share/ca-certificates/mozilla/README",
            b"not a cert".to_vec(),
            0o644,
        )
        .unwrap();
        assert_eq!(ca_bundle(&mut t).unwrap(), 2);
        assert_eq!(
            text(&t, "etc/ssl/certs/ca-certificates.crt"),
            "-----A-----\n-----B-----\n"
        );
        assert_eq!(
            t.get("etc/ssl/certs/ca-certificates.crt").unwrap().mode,
            0o644
        );
    }

    #[test]
    fn busybox_links_skip_files_of_other_packages() {
        let mut t = Tree::new();
        merged_usr(&mut t, false);
        assert!(
            busybox_links(&mut t, "/usr/bin/busybox", &["usr/bin/sh".into()]).is_err(),
            "busybox missing"
        );
        t.add_file("usr/bin/busybox", b"bb".to_vec(), 0o755)
            .unwrap();
        t.add_file("usr/sbin/sfdisk", b"real".to_vec(), 0o755)
            .unwrap();
        t.add_symlink("usr/bin/awk", "/etc/alternatives/awk")
            .unwrap(); // dangling
        let applets: Vec<Applet> = [
            "usr/bin/sh",
            "usr/sbin/sfdisk",
            "usr/bin/awk",
            "sbin/init",
            "usr/bin/[[",
            "usr/bin/busybox",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let skipped = busybox_links(&mut t, "/usr/bin/busybox", &applets).unwrap();
        assert_eq!(skipped, vec!["usr/sbin/sfdisk".to_string()]);
        assert!(matches!(
            &t.get("usr/sbin/sfdisk").unwrap().kind,
            Kind::File(_)
        ));
        for l in ["usr/bin/sh", "usr/bin/awk", "usr/sbin/init", "usr/bin/[["] {
            assert!(
                matches!(&t.get(l).unwrap().kind, Kind::Symlink(s) if s == "/usr/bin/busybox"),
                "{l}"
            );
        }
        assert!(
            matches!(&t.get("usr/bin/busybox").unwrap().kind, Kind::File(_)),
            "busybox replaced itself"
        );
        assert!(busybox_links(&mut t, "/usr/bin/busybox", &["../etc/x".into()]).is_err());
    }

    #[test]
    fn mount_points_are_empty_dirs_and_tmp_is_sticky() {
        let mut t = Tree::new();
        t.add_file("var/lib/dpkg/status", b"".to_vec(), 0o644)
            .unwrap();
        mount_points(&mut t, &["proc", "tmp", "var", "data"]).unwrap();
        assert_eq!(t.get("tmp").unwrap().mode, 0o1777);
        assert_eq!(t.get("proc").unwrap().mode, 0o755);
        assert!(t.get("data").unwrap().is_dir());
        assert!(
            t.get("var/lib/dpkg/status").is_some(),
            "existing /var content lost"
        );
        t.add_file("boot", b"oops".to_vec(), 0o644).unwrap();
        assert!(mount_points(&mut t, &["boot"]).is_err());
    }
}
