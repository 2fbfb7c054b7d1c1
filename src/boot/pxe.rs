//! Network boot assets (`edgeimg build --format pxe`): the kernel, the initramfs and the root
//! squashfs as plain files, an iPXE script that boots them over HTTP, the node config as files
//! the initramfs fetches, Matchbox profile/group JSON and a dnsmasq proxy-DHCP snippet, then
//! `SHA256SUMS` and `manifest.json`.
//!
//! The iPXE script passes `edgeimg.root=<base>/rootfs.squashfs` with its sha256
//! (`edgeimg.root_sha256=`): the initramfs fetches the root into RAM and refuses one with
//! another digest. `edgeimg.config=<base>/node/${mac:hexhyp}/` names a per-machine node config
//! folder, `edgeimg.config_default=<base>/node/default/` the one this build wrote.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::build::InputRecord;
use crate::plan::Plan;
use crate::progress::Reporter;
use crate::util::atomic::AtomicFile;

/// What `edgeimg build` writes (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The raw disk image (.img) with its .bmap.
    Raw,
    /// The raw image and its .img.xz (the default).
    #[default]
    Xz,
    /// Network boot files only (no disk image).
    Pxe,
    /// Raw image, .img.xz, and the network boot files in `<out>/pxe/`.
    All,
}

impl OutputFormat {
    /// Whether a disk image is written.
    pub fn image(self) -> bool {
        !matches!(self, OutputFormat::Pxe)
    }

    /// Whether the image is also compressed to .img.xz (`--no-xz` turns it off).
    pub fn xz(self, no_xz: bool) -> bool {
        matches!(self, OutputFormat::Xz | OutputFormat::All) && !no_xz
    }

    /// Whether network boot files are written.
    pub fn pxe(self) -> bool {
        matches!(self, OutputFormat::Pxe | OutputFormat::All)
    }

    /// Where the network boot files go: the output folder itself, or `pxe/` in it beside an
    /// image (so the two `SHA256SUMS` and `manifest.json` do not collide).
    pub fn pxe_dir(self, out: &Path) -> PathBuf {
        match self {
            OutputFormat::All => out.join("pxe"),
            _ => out.to_path_buf(),
        }
    }
}

/// `--base-url` when none is given: where QEMU tests forward HTTP (`guestfwd`).
pub const DEFAULT_BASE_URL: &str = "http://10.0.2.100:8080";

/// Modules a network-booted initramfs needs beyond the board's storage drivers: the board's
/// network cards (`root_modules`), packet sockets for the DHCP client, and loop devices for
/// the root image in RAM.
pub fn initramfs_modules(plan: &Plan) -> Vec<String> {
    let mut v = plan.board.root_modules.clone();
    v.extend(["af_packet".to_string(), "loop".to_string()]);
    v
}

/// The plan the initramfs is built from: for network boot, with the extra modules.
pub fn initramfs_plan(plan: &Plan, format: OutputFormat) -> Plan {
    let mut p = plan.clone();
    if format.pxe() {
        for m in initramfs_modules(plan) {
            if !p.board.initramfs_modules.contains(&m) {
                p.board.initramfs_modules.push(m);
            }
        }
    }
    p
}

/// Checks `--base-url`: `http://host[:port][/path]`, no query, no spaces. Returns it without
/// a trailing slash.
pub fn check_base_url(url: &str) -> Result<String> {
    let rest = url.strip_prefix("http://").with_context(|| {
        format!("--base-url {url:?}: give an http:// URL (the initramfs's wget speaks plain HTTP)")
    })?;
    if rest.is_empty()
        || rest.starts_with('/')
        || url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '"' | '\''))
    {
        bail!("--base-url {url:?}: give http://HOST[:PORT][/PATH] without spaces, quotes, ? or #");
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Everything the writer needs from the build.
pub struct PxeInputs<'a> {
    pub plan: &'a Plan,
    pub kver: &'a str,
    pub kernel: std::sync::Arc<[u8]>,
    pub initrd: &'a [u8],
    /// The root squashfs, already written by the build.
    pub root: &'a Path,
    /// The rendered node config files (`edgeimg/node.env`, ...).
    pub node_files: Vec<(String, Vec<u8>)>,
    pub inputs: Vec<InputRecord>,
    pub base_url: String,
}

#[derive(Debug, Serialize)]
pub struct PxeOutput {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// `manifest.json` of a network boot folder.
#[derive(Debug, Serialize)]
pub struct PxeManifest {
    pub format: &'static str,
    pub edgeimg_version: String,
    pub board: String,
    pub role: String,
    pub arch: String,
    pub plan_hash: String,
    pub kernel_version: String,
    pub k0s_version: String,
    pub source_date_epoch: u64,
    pub base_url: String,
    pub kernel_cmdline: String,
    pub root_sha256: String,
    pub token_included: bool,
    pub inputs: Vec<InputRecord>,
    pub outputs: Vec<PxeOutput>,
}

/// The kernel command line iPXE passes (`initrd=` names the initrd for the EFI stub).
pub fn kernel_cmdline(plan: &Plan, base: &str, root_sha256: &str) -> String {
    let mut args = vec![
        "initrd=initrd.img".to_string(),
        format!("edgeimg.root={base}/rootfs.squashfs"),
        format!("edgeimg.root_sha256={root_sha256}"),
        format!("edgeimg.config={base}/node/${{mac:hexhyp}}/"),
        format!("edgeimg.config_default={base}/node/default/"),
    ];
    args.extend(plan.board.cmdline.iter().cloned());
    args.join(" ")
}

/// `boot.ipxe`.
pub fn ipxe_script(plan: &Plan, kver: &str, base: &str, cmdline: &str) -> String {
    format!(
        "#!ipxe\n\
         # edgeimg {ver}: {board} {role}, linux {kver}. Chain to this script from your iPXE\n\
         # (DHCP option 67, Matchbox, or `chain {base}/boot.ipxe`).\n\
         echo edgeimg: netboot {board} {role} from {base}\n\
         kernel {base}/vmlinuz {cmdline} || goto failed\n\
         initrd {base}/initrd.img || goto failed\n\
         boot || goto failed\n\
         :failed\n\
         echo edgeimg: FAILED: iPXE could not fetch or boot {base}/vmlinuz and initrd.img\n\
         shell\n",
        ver = plan.edgeimg_version,
        board = plan.board.name,
        role = plan.role,
    )
}

/// Matchbox profile (one per role): the same kernel, initrd and arguments as `boot.ipxe`.
pub fn matchbox_profile(plan: &Plan, base: &str, cmdline: &str) -> serde_json::Value {
    // Matchbox puts `initrd=` in itself for EFI; keep the rest of the arguments.
    let args: Vec<&str> = cmdline
        .split(' ')
        .filter(|a| !a.starts_with("initrd="))
        .collect();
    serde_json::json!({
        "id": format!("edgeimg-{}-{}", plan.board.name, plan.role),
        "name": format!("edgeimg {} {}", plan.board.name, plan.role),
        "boot": {
            "kernel": format!("{base}/vmlinuz"),
            "initrd": [format!("{base}/initrd.img")],
            "args": args,
        }
    })
}

/// Matchbox group: the role's default group (no selector), or one machine (`mac`).
pub fn matchbox_group(plan: &Plan, mac: Option<&str>) -> serde_json::Value {
    let profile = format!("edgeimg-{}-{}", plan.board.name, plan.role);
    match mac {
        None => serde_json::json!({
            "id": format!("{profile}-default"),
            "name": format!("edgeimg {} {} (every machine without its own group)", plan.board.name, plan.role),
            "profile": profile,
        }),
        Some(mac) => serde_json::json!({
            "id": format!("{profile}-{}", mac.replace(':', "-")),
            "name": format!("edgeimg {} {} {mac}", plan.board.name, plan.role),
            "profile": profile,
            "selector": { "mac": mac },
        }),
    }
}

/// dnsmasq snippet: proxy-DHCP next to an existing DHCP server, TFTP for the iPXE binary,
/// then iPXE is told to fetch `boot.ipxe` over HTTP.
pub fn dnsmasq_snippet(base: &str) -> String {
    format!(
        "# edgeimg: dnsmasq proxy-DHCP + TFTP chainloading into iPXE, then {base}/boot.ipxe.\n\
         # Your existing DHCP server keeps handing out addresses; dnsmasq only adds boot info.\n\
         # Edit the dhcp-range line to your LAN, put ipxe.efi (Debian: ipxe, /usr/lib/ipxe/ipxe.efi)\n\
         # and undionly.kpxe into tftp-root, then: dnsmasq --conf-file=dnsmasq-edgeimg.conf\n\
         port=0\n\
         log-dhcp\n\
         dhcp-range=192.168.1.0,proxy\n\
         enable-tftp\n\
         tftp-root=/srv/tftp\n\
         # iPXE sends DHCP option 175: send it the script instead of iPXE again.\n\
         dhcp-match=set:ipxe,175\n\
         dhcp-boot=tag:ipxe,{base}/boot.ipxe\n\
         pxe-service=tag:!ipxe,x86-64_EFI,\"iPXE (UEFI)\",ipxe.efi\n\
         pxe-service=tag:!ipxe,x86PC,\"iPXE (BIOS)\",undionly.kpxe\n\
         pxe-prompt=\"edgeimg netboot\",0\n"
    )
}

/// Writes the network boot folder. Files are renamed into place one by one; `SHA256SUMS` and
/// `manifest.json` come last, so a folder with them is complete.
pub fn write(inp: &PxeInputs, dir: &Path, rep: &dyn Reporter) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let plan = inp.plan;
    let base = &inp.base_url;
    let mut names: Vec<String> = Vec::new();
    let mut put = |name: &str, data: &[u8]| -> Result<()> {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut f = AtomicFile::create(&path)?;
        f.write_all(data)
            .with_context(|| format!("writing {}", path.display()))?;
        f.commit()?;
        names.push(name.to_string());
        Ok(())
    };
    rep.step(&format!(
        "pxe: writing network boot files to {}",
        dir.display()
    ));
    put("vmlinuz", &inp.kernel)?;
    put("initrd.img", inp.initrd)?;
    let root_dst = dir.join("rootfs.squashfs");
    if inp.root != root_dst {
        copy_atomic(inp.root, &root_dst)?;
    }
    let root_sha256 = crate::disk::checksums::sha256_file(&root_dst)?;
    let cmdline = kernel_cmdline(plan, base, &root_sha256);
    put(
        "boot.ipxe",
        ipxe_script(plan, inp.kver, base, &cmdline).as_bytes(),
    )?;
    // The node config the build was given, as the default for every machine; per-machine
    // folders (node/<mac with dashes>/) are made by `edgeimg configure` or by hand.
    let mut index = String::new();
    let mut token_included = false;
    for (path, data) in &inp.node_files {
        let rel = path.strip_prefix("edgeimg/").unwrap_or(path);
        if rel.contains('\n') || rel.contains(' ') {
            bail!("node file {rel:?}: a name with spaces cannot be listed in node/default/index");
        }
        token_included |= rel == "token";
        put(&format!("node/default/{rel}"), data)?;
        index.push_str(rel);
        index.push('\n');
    }
    put("node/default/index", index.as_bytes())?;
    let profile = matchbox_profile(plan, base, &cmdline);
    let profile_id = profile["id"].as_str().unwrap_or_default().to_string();
    put(
        &format!("matchbox/profiles/{profile_id}.json"),
        serde_json::to_string_pretty(&profile)?.as_bytes(),
    )?;
    put(
        &format!("matchbox/groups/{profile_id}-default.json"),
        serde_json::to_string_pretty(&matchbox_group(plan, None))?.as_bytes(),
    )?;
    put("dnsmasq-edgeimg.conf", dnsmasq_snippet(base).as_bytes())?;

    let mut all = vec!["rootfs.squashfs".to_string()];
    all.extend(names);
    all.sort();
    let mut outputs = Vec::new();
    let mut sums = String::new();
    for name in &all {
        let p = dir.join(name);
        let sha256 = crate::disk::checksums::sha256_file(&p)?;
        sums.push_str(&format!("{sha256}  {name}\n"));
        outputs.push(PxeOutput {
            file: name.clone(),
            size: std::fs::metadata(&p)
                .with_context(|| format!("reading {}", p.display()))?
                .len(),
            sha256,
        });
    }
    let manifest = PxeManifest {
        format: "pxe",
        edgeimg_version: plan.edgeimg_version.clone(),
        board: plan.board.name.clone(),
        role: plan.role.to_string(),
        arch: plan.board.arch.debian().to_string(),
        plan_hash: plan.hash(),
        kernel_version: inp.kver.to_string(),
        k0s_version: plan.k0s_version.clone(),
        source_date_epoch: plan.source_date_epoch,
        base_url: base.clone(),
        kernel_cmdline: cmdline,
        root_sha256,
        token_included,
        inputs: inp.inputs.clone(),
        outputs,
    };
    write_file(
        &dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    let m = crate::disk::checksums::sha256_file(&dir.join("manifest.json"))?;
    sums.push_str(&format!("{m}  manifest.json\n"));
    write_file(&dir.join("SHA256SUMS"), sums.as_bytes())?;
    let mut paths: Vec<PathBuf> = all.iter().map(|n| dir.join(n)).collect();
    paths.push(dir.join("manifest.json"));
    paths.push(dir.join("SHA256SUMS"));
    Ok(paths)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn build_pxe_only(
    plan: &Plan,
    opts: &crate::build::BuildOptions,
    unpacked: &crate::rootfs::Unpacked,
    root: &crate::tree::Tree,
    initrd: &[u8],
    debs: &[crate::source::debian::FetchedDeb],
    k0s: &crate::source::k0s::K0sBinary,
    started: std::time::Instant,
    rep: &dyn Reporter,
) -> Result<crate::build::BuildReport> {
    let dir = opts.format.pxe_dir(&opts.out_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let root_file = dir.join("rootfs.squashfs");
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    rep.step(&format!("root: squashfs of {} entries", root.len()));
    crate::fs::squashfs::write_squashfs(
        root,
        &crate::build::squashfs_options(plan)?,
        tmp.as_file_mut(),
    )?;
    tmp.persist(&root_file)
        .with_context(|| format!("writing {}", root_file.display()))?;
    let inputs = pxe_inputs(plan, opts, unpacked, initrd, &root_file, debs, k0s)?;
    let outputs = crate::boot::pxe::write(&inputs, &dir, rep)?;
    let token_included = inputs.node_files.iter().any(|(p, _)| p.ends_with("/token"));
    drop(inputs);
    Ok(crate::build::BuildReport {
        image_size: std::fs::metadata(&root_file)?.len(),
        image: root_file,
        manifest: dir.join("manifest.json"),
        outputs,
        downloads: opts.cache.downloads_made(),
        seconds: started.elapsed().as_secs_f64(),
        token_included,
        token_required: plan.role.needs_token(),
        hostname: plan.node.hostname.clone().unwrap_or_default(),
        timings: vec![("pxe".to_string(), started.elapsed().as_secs_f64())],
    })
}

pub(crate) fn pxe_inputs<'a>(
    plan: &'a Plan,
    opts: &crate::build::BuildOptions,
    unpacked: &'a crate::rootfs::Unpacked,
    initrd: &'a [u8],
    root_file: &'a Path,
    debs: &[crate::source::debian::FetchedDeb],
    k0s: &crate::source::k0s::K0sBinary,
) -> Result<crate::boot::pxe::PxeInputs<'a>> {
    let kernel = unpacked
        .kernel
        .read(&format!("boot/vmlinuz-{}", unpacked.kver))
        .with_context(|| format!("the kernel package has no boot/vmlinuz-{}", unpacked.kver))?;
    Ok(crate::boot::pxe::PxeInputs {
        plan,
        kver: &unpacked.kver,
        kernel,
        initrd,
        root: root_file,
        node_files: plan.node.render()?.files,
        inputs: crate::build::input_records(debs, k0s, plan),
        base_url: opts.base_url.clone(),
    })
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    f.commit()
}

fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let mut src =
        std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut f = AtomicFile::create(to)?;
    std::io::copy(&mut src, &mut f)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    f.commit()
}

/// Copies `len` bytes at `offset` of `image` (the root partition) to `to`, atomically.
pub fn extract_part(image: &Path, offset: u64, len: u64, to: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut src =
        std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    src.seek(SeekFrom::Start(offset))?;
    let mut f = AtomicFile::create(to)?;
    std::io::copy(&mut (&mut src).take(len), &mut f).with_context(|| {
        format!(
            "copying the root of {} to {}",
            image.display(),
            to.display()
        )
    })?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert!(OutputFormat::Xz.image() && OutputFormat::Xz.xz(false));
        assert!(!OutputFormat::Xz.xz(true));
        assert!(!OutputFormat::Raw.xz(false) && !OutputFormat::Raw.pxe());
        assert!(!OutputFormat::Pxe.image() && OutputFormat::Pxe.pxe());
        assert!(OutputFormat::All.image() && OutputFormat::All.pxe());
        assert_eq!(
            OutputFormat::All.pxe_dir(Path::new("o")),
            Path::new("o/pxe")
        );
        assert_eq!(OutputFormat::Pxe.pxe_dir(Path::new("o")), Path::new("o"));
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            check_base_url("http://pxe.lan:8080/").unwrap(),
            "http://pxe.lan:8080"
        );
        assert_eq!(
            check_base_url("http://10.0.2.100:8080/e/x").unwrap(),
            "http://10.0.2.100:8080/e/x"
        );
        for bad in [
            "https://a",
            "ftp://a",
            "http://",
            "http://a b",
            "http://a?x=1",
            "http:///x",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn storage_and_install_render_into_node_env_and_are_checked() {
        use crate::node::NodeConfig;
        let origin = Path::new("/nonexistent/node.toml");
        let n = NodeConfig::from_toml_str(
            "[storage]\ndevice = \"/dev/vdb\"\n[install]\ndevice = \"/dev/nvme0n1\"\nwipe = true\n",
            origin,
        )
        .unwrap();
        let r = n.render().unwrap();
        let env = String::from_utf8(r.get("edgeimg/node.env").unwrap().to_vec()).unwrap();
        assert!(env.contains("STORAGE_DEVICE='/dev/vdb'"), "{env}");
        assert!(env.contains("INSTALL_DEVICE='/dev/nvme0n1'"), "{env}");
        assert!(env.contains("INSTALL_WIPE='1'"), "{env}");
        let plain = NodeConfig::from_toml_str("", origin)
            .unwrap()
            .render()
            .unwrap();
        let env = String::from_utf8(plain.get("edgeimg/node.env").unwrap().to_vec()).unwrap();
        assert!(env.contains("STORAGE_DEVICE=''") && env.contains("INSTALL_WIPE='0'"));
        for bad in ["vdb", "/dev/", "/dev/../sda", "/dev/sd a", "/dev/$(reboot)"] {
            let t = format!("[storage]\ndevice = {bad:?}\n");
            let e = format!("{:#}", NodeConfig::from_toml_str(&t, origin).unwrap_err());
            assert!(e.contains("storage.device"), "{bad}: {e}");
            let t = format!("[install]\ndevice = {bad:?}\n");
            let e = format!("{:#}", NodeConfig::from_toml_str(&t, origin).unwrap_err());
            assert!(
                e.contains("install.device") && e.contains("[install]"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn dnsmasq_names_the_script() {
        let s = dnsmasq_snippet("http://h:1");
        assert!(s.contains("dhcp-boot=tag:ipxe,http://h:1/boot.ipxe"));
        assert!(s.contains("proxy"));
    }
}
