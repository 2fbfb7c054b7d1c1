//! A dynamically linked program and everything the dynamic loader needs to run it, copied from
//! the root tree into the initramfs: the program, its interpreter (`PT_INTERP`) and the
//! `DT_NEEDED` libraries, recursively. Paths and the symlinks on the way to them are kept as
//! the root has them, so the loader finds the libraries in the initramfs exactly where it
//! finds them in the root (Debian's multiarch directories, no `ld.so.cache` needed).
//!
//! This is what lets the initramfs run Debian's `dmsetup` to open the root through dm-verity
//! without a second userland: the same package, the same bytes as in the root.

use std::collections::BTreeSet;

use anyhow::{anyhow, bail, Context, Result};
use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::Endianness;

use crate::tree::{Kind, Tree, TreePath};

/// What one ELF file asks of the dynamic loader.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ElfNeeds {
    /// `PT_INTERP`: the dynamic loader (`/lib64/ld-linux-x86-64.so.2`); none when static.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` sonames, in file order.
    pub needed: Vec<String>,
}

/// Reads the interpreter and needed libraries of a 32- or 64-bit ELF file.
pub fn elf_needs(data: &[u8]) -> Result<ElfNeeds> {
    match object::FileKind::parse(data).map_err(|e| anyhow!("not an ELF file: {e}"))? {
        object::FileKind::Elf32 => needs_of::<elf::FileHeader32<Endianness>>(data),
        object::FileKind::Elf64 => needs_of::<elf::FileHeader64<Endianness>>(data),
        other => bail!("not an ELF file ({other:?})"),
    }
}

fn needs_of<E: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<ElfNeeds> {
    let header = E::parse(data).map_err(|e| anyhow!("ELF header: {e}"))?;
    let endian = header.endian().map_err(|e| anyhow!("ELF header: {e}"))?;
    let mut needs = ElfNeeds::default();
    for segment in header
        .program_headers(endian, data)
        .map_err(|e| anyhow!("ELF program headers: {e}"))?
    {
        if let Some(interp) = segment
            .interpreter(endian, data)
            .map_err(|e| anyhow!("ELF interpreter: {e}"))?
        {
            needs.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let sections = header
        .sections(endian, data)
        .map_err(|e| anyhow!("ELF sections: {e}"))?;
    let Some((dynamic, strtab)) = sections
        .dynamic(endian, data)
        .map_err(|e| anyhow!("ELF dynamic section: {e}"))?
    else {
        return Ok(needs);
    };
    let strings = sections
        .strings(endian, data, strtab)
        .map_err(|e| anyhow!("ELF dynamic strings: {e}"))?;
    for d in dynamic {
        if d.tag32(endian) == Some(elf::DT_NEEDED) {
            let name = d
                .string(endian, strings)
                .map_err(|e| anyhow!("ELF DT_NEEDED name: {e}"))?;
            needs
                .needed
                .push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(needs)
}

/// Copies `program` (a path in `root`) into `dst` with its interpreter and the closure of its
/// shared libraries. Returns the paths copied (real files, not the symlinks on the way).
pub fn copy_program(root: &Tree, dst: &mut Tree, program: &str) -> Result<Vec<String>> {
    let dirs = library_dirs(root);
    let mut copied = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut work = vec![(program.to_string(), program.to_string())];
    while let Some((path, wanted_by)) = work.pop() {
        let tp = TreePath::new(&path)?;
        let real = copy_path(root, dst, &tp, 0)
            .with_context(|| format!("{path} (needed by {wanted_by})"))?;
        if !seen.insert(real.as_str().to_string()) {
            continue;
        }
        copied.push(real.as_str().to_string());
        let data = root
            .read(real.as_str())
            .with_context(|| format!("reading {path} from the root"))?;
        let needs = elf_needs(&data).with_context(|| format!("{path} (needed by {wanted_by})"))?;
        if let Some(interp) = needs.interpreter {
            work.push((interp, path.clone()));
        }
        for soname in needs.needed {
            let found = find_library(root, &dirs, &soname).ok_or_else(|| {
                anyhow!(
                    "{path} needs the shared library {soname}, which is in none of {} of the \
                     root filesystem: add the package that ships it to the profile's packages \
                     (and take it out of `provided`)",
                    dirs.join(", ")
                )
            })?;
            work.push((found, path.clone()));
        }
    }
    copied.sort();
    Ok(copied)
}

/// The directories the dynamic loader searches, from the root's `etc/ld.so.conf.d` (Debian's
/// libc6 lists the multiarch directories there), then `lib` and `usr/lib`.
fn library_dirs(root: &Tree) -> Vec<String> {
    let mut dirs = Vec::new();
    let conf_dir = TreePath::new("etc/ld.so.conf.d").unwrap_or_default();
    let mut confs: Vec<&TreePath> = root
        .children(&conf_dir)
        .filter(|(p, _)| p.as_str().ends_with(".conf"))
        .map(|(p, _)| p)
        .collect();
    confs.sort();
    for conf in confs {
        let Some(text) = root.read(conf.as_str()) else {
            continue;
        };
        for line in String::from_utf8_lossy(&text).lines() {
            let line = line.trim();
            if line.starts_with('/') {
                dirs.push(line.trim_start_matches('/').to_string());
            }
        }
    }
    dirs.extend(["lib".to_string(), "usr/lib".to_string()]);
    dirs.dedup();
    dirs
}

fn find_library(root: &Tree, dirs: &[String], soname: &str) -> Option<String> {
    dirs.iter().map(|d| format!("{d}/{soname}")).find(|p| {
        TreePath::new(p)
            .and_then(|tp| root.resolve_all(&tp))
            .is_ok_and(|real| matches!(root.get_path(&real).map(|e| &e.kind), Some(Kind::File(_))))
    })
}

/// Copies `path` from `src` to `dst`: every symlink met on the way (in a parent directory or
/// at the end) is copied as a symlink and followed, and the regular file it ends at is copied.
/// Returns the file's real path.
fn copy_path(src: &Tree, dst: &mut Tree, path: &TreePath, hops: usize) -> Result<TreePath> {
    if hops > 16 {
        bail!("too many levels of symbolic links");
    }
    let comps: Vec<&str> = path.components().collect();
    let mut done = TreePath::root();
    for (i, c) in comps.iter().enumerate() {
        let next = done.join(c)?;
        let entry = src
            .get_path(&next)
            .with_context(|| format!("/{} is not in the root filesystem", next.as_str()))?;
        if let Kind::Symlink(target) = &entry.kind {
            if dst.get_path(&next).is_none() {
                dst.insert(&next, entry.clone())?;
            }
            let base = if target.starts_with('/') {
                ""
            } else {
                done.as_str()
            };
            let rest = comps[i + 1..].join("/");
            let followed = TreePath::new(&format!("{base}/{target}/{rest}"))?;
            return copy_path(src, dst, &followed, hops + 1);
        }
        done = next;
    }
    let entry = src
        .get_path(&done)
        .with_context(|| format!("/{} is not in the root filesystem", done.as_str()))?;
    if !matches!(entry.kind, Kind::File(_)) {
        bail!("/{} is not a regular file", done.as_str());
    }
    dst.insert(&done, entry.clone())?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ELF of the test binary itself (built for this host, dynamically linked to libc).
    fn own_elf() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn reads_interpreter_and_needed_of_a_real_binary() {
        let needs = elf_needs(&own_elf()).unwrap();
        // Cross-checked against readelf, a tool edgeimg did not write.
        let out = std::process::Command::new("readelf")
            .args(["-d", "-l"])
            .arg(std::env::current_exe().unwrap())
            .output()
            .expect("readelf (binutils) is installed by scripts/install-deps");
        let text = String::from_utf8_lossy(&out.stdout);
        let from_readelf: Vec<String> = text
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(String::from))
            .collect();
        assert_eq!(needs.needed, from_readelf);
        let interp = needs.interpreter.expect("a dynamically linked test binary");
        assert!(
            text.contains(&format!("[Requesting program interpreter: {interp}]")),
            "{interp} vs\n{text}"
        );
    }

    #[test]
    fn rejects_what_is_not_elf() {
        assert!(elf_needs(b"#!/bin/sh\necho hi\n").is_err());
        assert!(elf_needs(b"\x7fELF").is_err());
    }

    fn root_with(program: &[u8]) -> Tree {
        let mut t = Tree::new();
        t.add_dir("usr/lib/x86_64-linux-gnu", 0o755).unwrap();
        t.add_symlink("lib", "usr/lib").unwrap();
        t.add_symlink("lib64", "usr/lib64").unwrap();
        t.add_file(
            "etc/ld.so.conf.d/x86_64-linux-gnu.conf",
            "# Multiarch support\n/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n",
            0o644,
        )
        .unwrap();
        t.add_file("usr/sbin/prog", program.to_vec(), 0o755)
            .unwrap();
        t
    }

    #[test]
    fn copies_the_closure_with_the_symlinks_on_the_way() {
        let exe = own_elf();
        let needs = elf_needs(&exe).unwrap();
        let interp = needs.interpreter.clone().unwrap();
        let mut root = root_with(&exe);
        // The libraries are the host's own files, so their own needs resolve too.
        let host_dir = std::path::Path::new("/usr/lib/x86_64-linux-gnu");
        assert!(
            host_dir.is_dir(),
            "this test runs on an x86-64 Debian or Ubuntu host"
        );
        let mut libs = vec![];
        for lib in needs.needed.iter().chain(["libc.so.6".to_string()].iter()) {
            let p = host_dir.join(lib);
            let Ok(real) = std::fs::canonicalize(&p) else {
                continue;
            };
            let real_name = real.file_name().unwrap().to_str().unwrap().to_string();
            root.add_file(
                &format!("usr/lib/x86_64-linux-gnu/{real_name}"),
                std::fs::read(&real).unwrap(),
                0o644,
            )
            .unwrap();
            if real_name != *lib {
                root.add_symlink(&format!("usr/lib/x86_64-linux-gnu/{lib}"), &real_name)
                    .unwrap();
            }
            libs.push(lib.clone());
        }
        // The loader as Debian lays it out: lib64 -> usr/lib64, a symlink into the multiarch dir.
        let ld = std::fs::canonicalize(&interp).unwrap();
        root.add_file(
            "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            std::fs::read(&ld).unwrap(),
            0o755,
        )
        .unwrap();
        root.add_symlink(
            "usr/lib64/ld-linux-x86-64.so.2",
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        )
        .unwrap();

        let mut dst = Tree::new();
        dst.add_symlink("lib", "usr/lib").unwrap();
        let copied = copy_program(&root, &mut dst, "usr/sbin/prog").unwrap();
        assert!(copied.contains(&"usr/sbin/prog".to_string()), "{copied:?}");
        assert!(
            copied.contains(&"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".to_string()),
            "{copied:?}"
        );
        // The interpreter path of the program works in the copy: symlinks kept.
        let tp = TreePath::new(&interp).unwrap();
        let real = dst.resolve_all(&tp).unwrap();
        assert_eq!(
            real.as_str(),
            "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        );
        for lib in libs {
            let p = TreePath::new(&format!("lib/x86_64-linux-gnu/{lib}")).unwrap();
            let real = dst.resolve_all(&p).unwrap();
            assert!(
                matches!(dst.get_path(&real).map(|e| &e.kind), Some(Kind::File(_))),
                "{lib} not reachable in the copy"
            );
        }
    }

    #[test]
    fn a_missing_library_names_it_and_what_to_do() {
        let mut root = root_with(&own_elf());
        root.remove("usr/lib/x86_64-linux-gnu");
        let mut dst = Tree::new();
        let err = format!(
            "{:#}",
            copy_program(&root, &mut dst, "usr/sbin/prog").unwrap_err()
        );
        assert!(err.contains("needs the shared library"), "{err}");
        assert!(err.contains("profile's packages"), "{err}");
        let err = format!(
            "{:#}",
            copy_program(&root, &mut dst, "usr/sbin/none").unwrap_err()
        );
        assert!(
            err.contains("/usr/sbin/none is not in the root filesystem"),
            "{err}"
        );
    }
}
