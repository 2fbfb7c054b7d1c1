//! Checks of the values in boards and profiles beyond their TOML types: names that must be
//! Debian package or kernel module names, paths that must stay inside the image tree, and
//! lengths. A profile is input like any other: a path with `..` or a 10 kB "package name" is
//! refused with the file, the field and what is allowed, before anything is fetched or written.

use std::path::Path;

use anyhow::{bail, Result};

use crate::profile::{
    BaseProfile, Board, BootSpec, RoleProfile, UserSpec, PI_MODEL_FILTERS, U_BOOT_KERNEL,
};
use crate::tree::TreePath;

/// Longest package name, module name and path accepted (Debian, Linux and PATH_MAX allow more
/// in theory; nothing real comes close).
const MAX_PACKAGE: usize = 100;
const MAX_MODULE: usize = 55;
const MAX_PATH: usize = 1024;
const MAX_KERNEL_ARG: usize = 512;

/// One problem: the field (`packages[3]`) and what is wrong with its value.
fn problem(file: &Path, field: &str, value: &str, what: &str) -> anyhow::Error {
    anyhow::anyhow!("{}: {field} = {:?}: {what}", file.display(), shorten(value))
}

/// The value as shown in a message: at most 60 characters.
fn shorten(v: &str) -> String {
    if v.chars().count() <= 60 {
        return v.to_string();
    }
    let head: String = v.chars().take(60).collect();
    format!("{head}... ({} bytes)", v.len())
}

fn package_name(v: &str) -> Result<(), &'static str> {
    let ok = (2..=MAX_PACKAGE).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err("not a Debian package name (lower-case letters, digits, '+', '-', '.'; 2 to 100 characters)")
    }
}

fn module_name(v: &str) -> Result<(), &'static str> {
    let ok = (1..=MAX_MODULE).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err("not a kernel module name (letters, digits, '_', '-'; at most 55 characters)")
    }
}

/// A sysctl setting `key=value`: the key dotted words (it becomes a path under /proc/sys),
/// the value one word (the node's shell splits the list on spaces).
fn sysctl(v: &str) -> Result<(), &'static str> {
    let ok = v.split_once('=').is_some_and(|(k, val)| {
        !k.is_empty()
            && k.split('.').all(|w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
            && !val.is_empty()
            && val
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:,/".contains(c))
    });
    if ok {
        Ok(())
    } else {
        Err("not a sysctl setting `key=value` (key: dotted words of letters, digits, '_', '-'; value: one word)")
    }
}

/// A Debian suite or codename (`trixie`, `trixie-backports`, `stable-updates`).
pub fn suite_name(v: &str) -> Result<(), &'static str> {
    let ok = (2..=64).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err("not a Debian suite name (lower-case letters, digits, '-', '.'; 2 to 64 characters)")
    }
}

/// A package name in which `*` matches any characters.
fn package_pattern(v: &str) -> Result<(), &'static str> {
    package_name(&v.replace('*', "x"))
        .map_err(|_| "not a Debian package name or pattern (a name, `*` matching any characters)")
}

/// `[suites]` of a board or profile: suite -> package patterns.
fn suites(file: &Path, s: &crate::profile::SuitePackages) -> Result<()> {
    for (suite, pkgs) in s {
        one(file, "suites", suite, suite_name)?;
        each(file, &format!("suites.{suite}"), pkgs, package_pattern)?;
    }
    Ok(())
}

/// A path inside the image tree: relative or absolute, never climbing out with `..`.
fn tree_path(v: &str) -> Result<(), &'static str> {
    if v.is_empty() || v.len() > MAX_PATH || v.contains('\0') {
        return Err("not a path (empty, longer than 1024 bytes, or holding a NUL byte)");
    }
    match TreePath::strict(v) {
        Ok(p) if !p.is_root() => Ok(()),
        Ok(_) => Err("names the root of the tree itself; give a path below it"),
        Err(_) => Err("leaves the image tree ('..'); give a path inside it"),
    }
}

fn user_name(v: &str) -> Result<(), &'static str> {
    let ok = (1..=32).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err("not a user name (lower-case letters, digits, '_', '-'; at most 32 characters)")
    }
}

fn absolute_path(v: &str) -> Result<(), &'static str> {
    if !v.starts_with('/') {
        return Err("not an absolute path");
    }
    tree_path(v)
}

fn kernel_arg(v: &str) -> Result<(), &'static str> {
    if v.is_empty()
        || v.len() > MAX_KERNEL_ARG
        || v.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Err("not one kernel argument (no spaces or control characters; at most 512 bytes)")
    } else {
        Ok(())
    }
}

/// Runs `check` on every value of a list field, naming `field[i]` on the first failure.
fn each(
    file: &Path,
    field: &str,
    values: &[String],
    check: fn(&str) -> Result<(), &'static str>,
) -> Result<()> {
    for (i, v) in values.iter().enumerate() {
        check(v).map_err(|what| problem(file, &format!("{field}[{i}]"), v, what))?;
    }
    Ok(())
}

fn one(
    file: &Path,
    field: &str,
    v: &str,
    check: fn(&str) -> Result<(), &'static str>,
) -> Result<()> {
    check(v).map_err(|what| problem(file, field, v, what))
}

fn users(file: &Path, users: &[UserSpec]) -> Result<()> {
    for (i, u) in users.iter().enumerate() {
        one(file, &format!("users[{i}].name"), &u.name, user_name)?;
        one(file, &format!("users[{i}].home"), &u.home, absolute_path)?;
        one(file, &format!("users[{i}].shell"), &u.shell, absolute_path)?;
    }
    Ok(())
}

/// `profiles/base.toml`.
pub fn base(p: &BaseProfile, file: &Path) -> Result<()> {
    each(file, "packages", &p.packages, package_name)?;
    each(file, "provided", &p.provided, package_name)?;
    one(file, "suite", &p.suite, suite_name)?;
    suites(file, &p.suites)?;
    each(file, "drop_paths", &p.drop_paths, tree_path)?;
    each(file, "busybox_applets", &p.busybox_applets, tree_path)?;
    each(
        file,
        "kubernetes.modules",
        &p.kubernetes.modules,
        module_name,
    )?;
    each(file, "kubernetes.sysctls", &p.kubernetes.sysctls, sysctl)?;
    each(file, "initramfs_modules", &p.initramfs_modules, module_name)?;
    each(file, "verity.modules", &p.verity.modules, module_name)?;
    each(file, "verity.programs", &p.verity.programs, tree_path)?;
    users(file, &p.users)?;
    if !(4096..=1 << 20).contains(&p.squashfs.block_size)
        || !p.squashfs.block_size.is_power_of_two()
    {
        bail!(
            "{}: squashfs.block_size = {}: a power of two from 4096 to 1048576",
            file.display(),
            p.squashfs.block_size
        );
    }
    Ok(())
}

/// `profiles/<role>.toml`.
pub fn role(p: &RoleProfile, file: &Path) -> Result<()> {
    each(file, "packages", &p.packages, package_name)?;
    each(file, "root_modules", &p.root_modules, module_name)?;
    suites(file, &p.suites)?;
    users(file, &p.users)
}

/// `boards/<name>.toml`.
pub fn board(b: &Board) -> Result<()> {
    let file = b.file.as_path();
    one(file, "kernel_package", &b.kernel_package, package_name)?;
    if let Some(k) = &b.kernel_suite {
        one(file, "kernel_suite", k, suite_name)?;
    }
    suites(file, &b.suites)?;
    each(file, "packages", &b.packages, package_name)?;
    each(file, "initramfs_modules", &b.initramfs_modules, module_name)?;
    each(file, "root_modules", &b.root_modules, module_name)?;
    each(file, "cmdline", &b.cmdline, kernel_arg)?;
    if let BootSpec::Uefi {
        efi_binary,
        efi_path,
        uki_stub,
    } = &b.boot
    {
        one(file, "boot.efi_binary", efi_binary, tree_path)?;
        one(file, "boot.efi_path", efi_path, tree_path)?;
        if let Some(stub) = uki_stub {
            one(file, "boot.uki_stub", stub, tree_path)?;
        }
    }
    if let BootSpec::Rpi(r) = &b.boot {
        if let Some(u) = &r.u_boot {
            one(file, "boot.u_boot.binary", &u.binary, tree_path)?;
            for (model, path) in &u.models {
                let field = format!("boot.u_boot.models.{model}");
                if !PI_MODEL_FILTERS.contains(&model.as_str()) {
                    return Err(problem(
                        file,
                        &field,
                        path,
                        &format!(
                            "{model:?} is not a Pi firmware model filter (one of {})",
                            PI_MODEL_FILTERS.join(", ")
                        ),
                    ));
                }
                one(file, &field, path, tree_path)?;
            }
            if r.kernel != U_BOOT_KERNEL {
                return Err(problem(
                    file,
                    "boot.kernel",
                    &r.kernel,
                    &format!("with [boot.u_boot] the kernel is named {U_BOOT_KERNEL:?} (the name edgeimg update and the node look for in a slot folder)"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DataDir;

    fn data() -> DataDir {
        DataDir::locate(Some(Path::new(env!("CARGO_MANIFEST_DIR")))).unwrap()
    }

    #[test]
    fn the_shipped_boards_and_profiles_pass() {
        let d = data();
        base(&d.base().unwrap(), Path::new("profiles/base.toml")).unwrap();
        for b in d.boards().unwrap() {
            board(&b).unwrap();
        }
    }

    #[test]
    fn paths_out_of_the_tree_are_refused_naming_the_field() {
        let mut p = data().base().unwrap();
        p.busybox_applets.push("../../etc/shadow".into());
        let n = p.busybox_applets.len() - 1;
        let err = base(&p, Path::new("profiles/base.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("profiles/base.toml: "), "{err}");
        assert!(err.contains(&format!("busybox_applets[{n}]")), "{err}");
        assert!(err.contains("leaves the image tree"), "{err}");

        let mut p = data().base().unwrap();
        p.verity.programs = vec!["usr/../../sbin/dmsetup".into()];
        let err = base(&p, Path::new("b.toml")).unwrap_err().to_string();
        assert!(err.contains("verity.programs[0]"), "{err}");

        let mut p = data().base().unwrap();
        p.drop_paths.push("/".into());
        let err = base(&p, Path::new("b.toml")).unwrap_err().to_string();
        assert!(err.contains("the root of the tree"), "{err}");
    }

    #[test]
    fn overlong_and_malformed_names_are_refused_and_shortened() {
        let mut p = data().base().unwrap();
        p.packages.push("a".repeat(10_000));
        let err = base(&p, Path::new("b.toml")).unwrap_err().to_string();
        assert!(err.contains("not a Debian package name"), "{err}");
        assert!(err.contains("(10000 bytes)"), "{err}");
        assert!(
            err.len() < 400,
            "the message repeats the whole value: {err}"
        );

        let mut p = data().base().unwrap();
        p.packages.push("Busybox".into());
        assert!(base(&p, Path::new("b.toml")).is_err());

        let mut p = data().base().unwrap();
        p.initramfs_modules.push("ext4 ; reboot".into());
        let err = base(&p, Path::new("b.toml")).unwrap_err().to_string();
        assert!(err.contains("initramfs_modules["), "{err}");

        let mut p = data().base().unwrap();
        p.users[0].home = "/run/../../x".into();
        let err = base(&p, Path::new("b.toml")).unwrap_err().to_string();
        assert!(err.contains("users[0].home"), "{err}");

        let mut p = data().base().unwrap();
        p.squashfs.block_size = 1000;
        assert!(base(&p, Path::new("b.toml")).is_err());

        // The node writes the sysctls into /proc/sys: only `key=value` of plain words.
        let mut p = data().base().unwrap();
        p.kubernetes.sysctls.push("net.ipv4.ip_forward 1".into());
        let err = base(&p, Path::new("b.toml")).unwrap_err().to_string();
        assert!(err.contains("kubernetes.sysctls["), "{err}");
        let mut p = data().base().unwrap();
        p.kubernetes.sysctls.push("../../x=1".into());
        assert!(base(&p, Path::new("b.toml")).is_err());
        let mut p = data().base().unwrap();
        p.kubernetes.modules.push("a b".into());
        let err = base(&p, Path::new("b.toml")).unwrap_err().to_string();
        assert!(err.contains("kubernetes.modules["), "{err}");
    }

    #[test]
    fn board_values_are_checked() {
        let mut b = data().board("x86-64").unwrap();
        b.cmdline.push("quiet splash".into());
        let err = board(&b).unwrap_err().to_string();
        assert!(err.contains("x86-64.toml: cmdline["), "{err}");
        let mut b = data().board("x86-64").unwrap();
        b.kernel_package = "../linux".into();
        assert!(board(&b)
            .unwrap_err()
            .to_string()
            .contains("kernel_package"));
        // A U-Boot board's kernel has the name an update looks for.
        let mut b = data().board("pi4").unwrap();
        if let BootSpec::Rpi(r) = &mut b.boot {
            r.kernel = "kernel8.img".into();
        }
        let err = board(&b).unwrap_err().to_string();
        assert!(
            err.contains("pi4.toml: boot.kernel = \"kernel8.img\": with [boot.u_boot]"),
            "{err}"
        );
        let mut b = data().board("pi4").unwrap();
        if let BootSpec::Rpi(r) = &mut b.boot {
            r.u_boot.as_mut().unwrap().binary = "../u-boot.bin".into();
        }
        assert!(board(&b)
            .unwrap_err()
            .to_string()
            .contains("boot.u_boot.binary"));
        // A per-model build: a firmware filter, a path inside the tree.
        let with_model = |model: &str, path: &str| {
            let mut b = data().board("pi3-armhf").unwrap();
            if let BootSpec::Rpi(r) = &mut b.boot {
                let u = r.u_boot.as_mut().unwrap();
                u.models.insert(model.into(), path.into());
            }
            board(&b).map_err(|e| e.to_string())
        };
        assert!(with_model("pi3", "usr/lib/u-boot/rpi_3_32b/u-boot.bin").is_ok());
        let err = with_model("raspberry", "usr/lib/u-boot/x.bin").unwrap_err();
        assert!(
            err.contains("boot.u_boot.models.raspberry") && err.contains("pi3+"),
            "{err}"
        );
        let err = with_model("pi2", "../u-boot.bin").unwrap_err();
        assert!(err.contains("boot.u_boot.models.pi2"), "{err}");
    }

    #[test]
    fn role_values_are_checked() {
        let d = data();
        let mut r = d.role(crate::node::Role::Worker).unwrap();
        r.packages.push(String::new());
        let err = role(&r, Path::new("profiles/worker.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("profiles/worker.toml: packages["), "{err}");
    }
}
