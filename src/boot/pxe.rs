//! Network boot as an output of a boot method (`edgeimg build --format pxe`): what the
//! initramfs needs beyond the board's own boot, the kernel command line iPXE passes, the iPXE
//! script, Matchbox profile/group JSON and a dnsmasq proxy-DHCP snippet. `build::netboot`
//! writes them into a folder with the kernel, the initramfs and the root squashfs.
//!
//! The iPXE script passes `edgeimg.root=<base>/rootfs.squashfs` with its sha256
//! (`edgeimg.root_sha256=`): the initramfs fetches the root into RAM and refuses one with
//! another digest. `edgeimg.config=<base>/node/${mac:hexhyp}/` names a per-machine node config
//! folder, `edgeimg.config_default=<base>/node/default/` the one this build wrote.

use anyhow::{bail, Context, Result};

use crate::node::contract::KernelArg;
use crate::plan::Plan;

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

/// The kernel command line iPXE passes (`initrd=` names the initrd for the EFI stub).
pub fn kernel_cmdline(plan: &Plan, base: &str, root_sha256: &str) -> String {
    let mut args = vec![
        "initrd=initrd.img".to_string(),
        KernelArg::Root.with(format!("{base}/rootfs.squashfs")),
        KernelArg::RootSha256.with(root_sha256),
        KernelArg::Config.with(format!("{base}/node/${{mac:hexhyp}}/")),
        KernelArg::ConfigDefault.with(format!("{base}/node/default/")),
        super::PANIC_REBOOT.to_string(),
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
    // Matchbox's iPXE template is `kernel {{.Kernel}}{{range $arg := .Args}} {{$arg}}{{end}}`
    // then one `initrd` line per entry: it adds no `initrd=` of its own, and the kernel's EFI
    // stub needs it to find the initrd, so the arguments are boot.ipxe's, `initrd=` included.
    let args: Vec<&str> = cmdline.split(' ').collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
