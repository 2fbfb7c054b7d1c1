//! The QEMU command line, assembled from typed parts: the machine, the firmware, what the VM
//! boots from ([`BootFrom`]: the image's disk attached by its [`DiskInterface`], or the
//! network), the network card and the console. Each part writes only its own arguments; none
//! edits another's.

use std::path::Path;

use super::direct::DirectFiles;
use super::firmware::VmFirmware;
use super::{DiskInterface, QemuSpec, SmokeOptions};

/// Where the console goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Console {
    /// Serial on QEMU's stdout (read by smoke), no monitor.
    Pipe,
    /// Serial and monitor on the user's terminal (Ctrl-A X quits).
    Terminal,
}

/// What the VM boots from.
#[derive(Clone, Copy, Debug)]
pub(super) enum BootFrom<'a> {
    /// A disk, attached as the board's `qemu.disk` says; for a kernel-direct board, with the
    /// kernel, initrd, DTB and command line read from it.
    Disk {
        path: &'a Path,
        direct: Option<&'a DirectFiles>,
    },
    /// No boot disk: the firmware boots the network card, whose option ROM `romfile` (an iPXE
    /// EFI ROM) fetches `bootfile` from QEMU's user-mode TFTP server in `tftp_dir`.
    /// `data_disk` is attached (virtio) as a data disk.
    Network {
        tftp_dir: &'a Path,
        bootfile: &'a str,
        romfile: &'a Path,
        data_disk: Option<&'a Path>,
    },
}

/// One VM: everything its command line is made of.
#[derive(Clone, Copy, Debug)]
pub(super) struct VmConfig<'a> {
    pub spec: &'a QemuSpec,
    pub firmware: Option<&'a VmFirmware>,
    pub boot: BootFrom<'a>,
    /// `-accel kvm` instead of TCG.
    pub kvm: bool,
    /// MAC address of the network card.
    pub mac: Option<&'a str>,
    /// QEMU `guestfwd=` rules.
    pub guestfwd: &'a [String],
    /// A VDE switch's socket directory to plug the network card into, instead of user-mode
    /// networking.
    pub switch: Option<&'a Path>,
    pub console: Console,
}

impl<'a> VmConfig<'a> {
    /// A VM whose console smoke reads, set up as `opts` says.
    pub fn piped(
        spec: &'a QemuSpec,
        firmware: Option<&'a VmFirmware>,
        boot: BootFrom<'a>,
        opts: &'a SmokeOptions,
    ) -> VmConfig<'a> {
        VmConfig {
            spec,
            firmware,
            boot,
            kvm: opts.kvm,
            mac: opts.mac.as_deref(),
            guestfwd: &opts.guestfwd,
            switch: opts.switch.as_deref(),
            console: Console::Pipe,
        }
    }

    /// A VM on the user's terminal (`edgeimg run`).
    pub fn on_terminal(
        spec: &'a QemuSpec,
        firmware: Option<&'a VmFirmware>,
        boot: BootFrom<'a>,
        kvm: bool,
    ) -> VmConfig<'a> {
        VmConfig {
            spec,
            firmware,
            boot,
            kvm,
            mac: None,
            guestfwd: &[],
            switch: None,
            console: Console::Terminal,
        }
    }

    /// The full argument list (without the binary).
    pub fn args(&self) -> Vec<String> {
        let mut a = self.machine();
        a.extend(self.firmware_args());
        a.extend(self.boot_args());
        a.extend(self.net_args());
        a.extend(self.console_args());
        // A panic or reboot ends the VM instead of looping until the timeout.
        a.push("-no-reboot".into());
        a.extend(self.spec.extra_args.iter().cloned());
        if let BootFrom::Network {
            data_disk: Some(d), ..
        } = self.boot
        {
            a.extend([
                "-drive".into(),
                format!("file={},format=raw,if=none,id=d1", qemu_path(d)),
                "-device".into(),
                "virtio-blk-pci,drive=d1".into(),
            ]);
        }
        a
    }

    fn machine(&self) -> Vec<String> {
        let spec = self.spec;
        let mut a: Vec<String> = vec!["-M".into(), spec.machine.clone()];
        a.extend(["-accel".into(), if self.kvm { "kvm" } else { "tcg" }.into()]);
        if let Some(cpu) = &spec.cpu {
            a.extend(["-cpu".into(), cpu.clone()]);
        }
        a.extend([
            "-m".into(),
            spec.memory_mib.to_string(),
            "-smp".into(),
            spec.smp.to_string(),
        ]);
        a
    }

    fn firmware_args(&self) -> Vec<String> {
        match self.firmware {
            None => vec![],
            Some(VmFirmware::Split { code, vars }) => vec![
                "-drive".into(),
                format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    qemu_path(code)
                ),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", qemu_path(vars)),
            ],
            Some(VmFirmware::Combined(code)) => vec!["-bios".into(), code.display().to_string()],
        }
    }

    fn boot_args(&self) -> Vec<String> {
        let BootFrom::Disk { path, direct } = self.boot else {
            return vec![];
        };
        let mut a = Vec::new();
        if let Some(d) = direct {
            a.extend(["-kernel".into(), d.kernel.display().to_string()]);
            if let Some(p) = &d.initrd {
                a.extend(["-initrd".into(), p.display().to_string()]);
            }
            if let Some(p) = &d.dtb {
                a.extend(["-dtb".into(), p.display().to_string()]);
            }
            if let Some(c) = &d.cmdline {
                a.extend(["-append".into(), c.clone()]);
            }
        }
        a.extend(disk_args(self.spec.disk, path));
        a
    }

    fn net_args(&self) -> Vec<String> {
        if self.spec.net_device.is_empty() {
            return vec!["-nic".into(), "none".into()];
        }
        // restrict=on: the guest reaches nothing outside; explicit guestfwd rules still work.
        // On a VDE switch the guest reaches only the other VMs plugged into it.
        let mut netdev = match self.switch {
            Some(sock) => format!("vde,id=n0,sock={}", qemu_path(sock)),
            None => {
                let mut user = "user,id=n0,restrict=on".to_string();
                for fwd in self.guestfwd {
                    user.push_str(&format!(",guestfwd={fwd}"));
                }
                user
            }
        };
        let mut dev = format!("{},netdev=n0", self.spec.net_device);
        if let Some(mac) = self.mac {
            dev.push_str(&format!(",mac={mac}"));
        }
        if let BootFrom::Network {
            tftp_dir,
            bootfile,
            romfile,
            ..
        } = self.boot
        {
            netdev.push_str(&format!(
                ",tftp={},bootfile={bootfile}",
                qemu_path(tftp_dir)
            ));
            dev.push_str(&format!(",romfile={}", qemu_path(romfile)));
        }
        vec!["-netdev".into(), netdev, "-device".into(), dev]
    }

    fn console_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["-display".into(), "none".into()];
        if self.console == Console::Pipe {
            a.extend(["-monitor".into(), "none".into()]);
        }
        for _ in 0..self.spec.console_serial {
            a.extend(["-serial".into(), "null".into()]);
        }
        let serial = match self.console {
            Console::Pipe => "stdio",
            Console::Terminal => "mon:stdio",
        };
        a.extend(["-serial".into(), serial.into()]);
        a
    }
}

/// How each interface attaches the disk `disk` as drive `d0`.
fn disk_args(kind: DiskInterface, disk: &Path) -> Vec<String> {
    let drive = |iface: &str| format!("file={},format=raw,if={iface},id=d0", qemu_path(disk));
    match kind {
        DiskInterface::Virtio => vec![
            "-drive".into(),
            drive("none"),
            "-device".into(),
            "virtio-blk-pci,drive=d0".into(),
        ],
        DiskInterface::Nvme => vec![
            "-drive".into(),
            drive("none"),
            "-device".into(),
            "nvme,drive=d0,serial=edgeimg0".into(),
        ],
        DiskInterface::Ahci | DiskInterface::Sata => vec![
            "-drive".into(),
            drive("none"),
            "-device".into(),
            "ahci,id=ahci0".into(),
            "-device".into(),
            "ide-hd,drive=d0,bus=ahci0.0".into(),
        ],
        DiskInterface::Usb => vec![
            "-drive".into(),
            drive("none"),
            "-device".into(),
            "qemu-xhci,id=xhci".into(),
            "-device".into(),
            "usb-storage,bus=xhci.0,drive=d0".into(),
        ],
        DiskInterface::Sd => vec!["-drive".into(), drive("sd")],
        DiskInterface::Detached => vec![],
    }
}

/// QEMU's `-drive file=` syntax doubles commas.
fn qemu_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::tests::{opts, x86};
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    fn has_seq(args: &[String], seq: &[&str]) -> bool {
        args.windows(seq.len())
            .any(|w| w.iter().zip(seq).all(|(a, b)| a == b))
    }

    fn disk(path: &Path) -> BootFrom<'_> {
        BootFrom::Disk { path, direct: None }
    }

    #[test]
    fn x86_command_line() {
        let spec = x86();
        let fw = VmFirmware::Split {
            code: "/fw/CODE.fd".into(),
            vars: "/tmp/w/vars.fd".into(),
        };
        let boot = disk(Path::new("/tmp/a,b/disk.img"));
        let mut o = opts(10);
        o.guestfwd = vec!["tcp:10.0.2.100:80-tcp:127.0.0.1:8080".into()];
        o.mac = Some("52:54:00:12:34:56".into());
        let a = VmConfig::piped(&spec, Some(&fw), boot, &o).args();
        assert!(has_seq(&a, &["-M", "q35", "-accel", "tcg"]), "{a:?}");
        assert!(has_seq(&a, &["-m", "1024", "-smp", "2"]));
        assert!(has_seq(
            &a,
            &[
                "-drive",
                "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd"
            ]
        ));
        assert!(has_seq(
            &a,
            &["-drive", "if=pflash,format=raw,unit=1,file=/tmp/w/vars.fd"]
        ));
        assert!(
            has_seq(
                &a,
                &["-drive", "file=/tmp/a,,b/disk.img,format=raw,if=none,id=d0"]
            ),
            "{a:?}"
        );
        assert!(has_seq(&a, &["-device", "virtio-blk-pci,drive=d0"]));
        assert!(has_seq(
            &a,
            &[
                "-netdev",
                "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:8080"
            ]
        ));
        assert!(has_seq(
            &a,
            &["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"]
        ));
        assert!(has_seq(
            &a,
            &["-monitor", "none", "-serial", "stdio", "-no-reboot"]
        ));
        let t = VmConfig::on_terminal(&spec, Some(&fw), boot, true).args();
        assert!(has_seq(&t, &["-accel", "kvm"]) && has_seq(&t, &["-serial", "mon:stdio"]));
        // On a VDE switch: no user-mode network (nothing outside the switch is reachable).
        o.switch = Some(PathBuf::from("/tmp/sw,1"));
        let v = VmConfig::piped(&spec, Some(&fw), boot, &o).args();
        assert!(
            has_seq(&v, &["-netdev", "vde,id=n0,sock=/tmp/sw,,1"]),
            "{v:?}"
        );
        assert!(!v.iter().any(|x| x.starts_with("user,")), "{v:?}");
        assert!(has_seq(
            &v,
            &["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"]
        ));
        assert!(!t.contains(&"-monitor".to_string()));
    }

    #[test]
    fn other_disks_serials_and_firmware_forms() {
        let mut spec = x86();
        spec.console_serial = 1;
        spec.disk = DiskInterface::Sd;
        spec.net_device = String::new();
        spec.cpu = Some("cortex-a53".into());
        let fw = VmFirmware::Combined("/fw/OVMF.fd".into());
        let o = opts(1);
        let a = VmConfig::piped(&spec, Some(&fw), disk(Path::new("/d.img")), &o).args();
        assert!(
            has_seq(&a, &["-serial", "null", "-serial", "stdio"]),
            "{a:?}"
        );
        assert!(has_seq(
            &a,
            &["-drive", "file=/d.img,format=raw,if=sd,id=d0"]
        ));
        assert!(has_seq(&a, &["-nic", "none"]) && has_seq(&a, &["-cpu", "cortex-a53"]));
        assert!(has_seq(&a, &["-bios", "/fw/OVMF.fd"]));
        for (kind, dev) in [
            (DiskInterface::Nvme, "nvme,drive=d0,serial=edgeimg0"),
            (DiskInterface::Usb, "usb-storage,bus=xhci.0,drive=d0"),
            (DiskInterface::Ahci, "ide-hd,drive=d0,bus=ahci0.0"),
        ] {
            assert!(
                disk_args(kind, Path::new("/d")).contains(&dev.to_string()),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_network_boot_has_no_boot_disk_and_tells_the_card_what_to_boot() {
        let spec = x86();
        let o = opts(1);
        let boot = BootFrom::Network {
            tftp_dir: Path::new("/srv/t"),
            bootfile: "boot.ipxe",
            romfile: Path::new("/rom/efi-virtio.rom"),
            data_disk: None,
        };
        let a = VmConfig::piped(&spec, None, boot, &o).args();
        assert!(!a.iter().any(|x| x.contains("id=d0")), "{a:?}");
        assert!(has_seq(
            &a,
            &[
                "-netdev",
                "user,id=n0,restrict=on,tftp=/srv/t,bootfile=boot.ipxe",
                "-device",
                "virtio-net-pci,netdev=n0,romfile=/rom/efi-virtio.rom"
            ]
        ));
    }

    /// The `[qemu]` table of every board file, by board name.
    fn board_specs() -> Vec<(String, QemuSpec)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
        let mut specs: Vec<(String, QemuSpec)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                let board: toml::Table = toml::from_str(&text).unwrap();
                let spec = board["qemu"].clone().try_into().unwrap();
                let name = p.file_stem().unwrap().to_string_lossy().to_string();
                (name, spec)
            })
            .collect();
        specs.sort_by(|a, b| a.0.cmp(&b.0));
        specs
    }

    /// How a golden case boots.
    #[derive(Clone, Copy)]
    enum GoldenBoot {
        Disk,
        Network { data_disk: bool },
    }

    /// Which firmware file the host is taken to have.
    #[derive(Clone, Copy)]
    enum GoldenFirmware {
        /// The first `code` with a `vars` entry, the vars copied into the VM's directory.
        Split,
        /// The first `code` with no `vars` entry (`-bios`).
        Combined,
    }

    /// One way of booting a board, as `smoke`, `run` and `netboot` assemble it.
    struct Case {
        name: &'static str,
        console: Console,
        kvm: bool,
        /// A MAC address and a guestfwd rule.
        net_options: bool,
        firmware: GoldenFirmware,
        boot: GoldenBoot,
    }

    const CASES: &[Case] = &[
        Case {
            name: "smoke",
            console: Console::Pipe,
            kvm: false,
            net_options: false,
            firmware: GoldenFirmware::Split,
            boot: GoldenBoot::Disk,
        },
        Case {
            name: "run-kvm",
            console: Console::Terminal,
            kvm: true,
            net_options: false,
            firmware: GoldenFirmware::Split,
            boot: GoldenBoot::Disk,
        },
        Case {
            name: "smoke-mac-guestfwd",
            console: Console::Pipe,
            kvm: false,
            net_options: true,
            firmware: GoldenFirmware::Split,
            boot: GoldenBoot::Disk,
        },
        Case {
            name: "smoke-bios",
            console: Console::Pipe,
            kvm: false,
            net_options: false,
            firmware: GoldenFirmware::Combined,
            boot: GoldenBoot::Disk,
        },
        Case {
            name: "netboot",
            console: Console::Pipe,
            kvm: false,
            net_options: true,
            firmware: GoldenFirmware::Split,
            boot: GoldenBoot::Network { data_disk: false },
        },
        Case {
            name: "netboot-data-disk",
            console: Console::Pipe,
            kvm: false,
            net_options: true,
            firmware: GoldenFirmware::Split,
            boot: GoldenBoot::Network { data_disk: true },
        },
    ];

    /// The arguments of `case` for `spec`, or None when the board has no such firmware.
    fn case_args(spec: &QemuSpec, case: &Case) -> Option<Vec<String>> {
        let fw = match (&spec.firmware, case.firmware) {
            (None, GoldenFirmware::Split) => None,
            (None, GoldenFirmware::Combined) => return None,
            (Some(f), GoldenFirmware::Split) => {
                let i = (0..f.code.len()).find(|&i| i < f.vars.len())?;
                Some(VmFirmware::Split {
                    code: f.code[i].clone().into(),
                    vars: "/vm/efivars.fd".into(),
                })
            }
            (Some(f), GoldenFirmware::Combined) => {
                Some(VmFirmware::Combined(f.code.get(f.vars.len())?.into()))
            }
        };
        let mut o = opts(1);
        o.kvm = case.kvm;
        if case.net_options {
            o.mac = Some("52:54:00:12:34:56".into());
            o.guestfwd = vec!["tcp:10.0.2.100:80-tcp:127.0.0.1:8080".into()];
        }
        let direct = spec
            .direct
            .as_ref()
            .filter(|_| spec.kernel_direct)
            .map(|d| {
                let mut cmdline = "console=serial0,115200 root=PARTLABEL=root".to_string();
                for a in &d.append {
                    cmdline.push(' ');
                    cmdline.push_str(a);
                }
                let file = |n: &String| PathBuf::from(format!("/vm/direct-{n}"));
                // A board whose firmware the harness plays boots slot a's files.
                let slot = |n: &String| file(&format!("slot-a_{n}"));
                match &d.firmware {
                    Some(_) => DirectFiles {
                        kernel: slot(&d.kernel),
                        initrd: Some(slot(&"initrd.img".to_string())),
                        dtb: d.dtb.as_ref().map(slot),
                        cmdline: Some(cmdline),
                        firmware: Some("config.txt, os_prefix=slot-a/".into()),
                    },
                    None => DirectFiles {
                        kernel: file(&d.kernel),
                        initrd: d.initrd.as_ref().map(file),
                        dtb: d.dtb.as_ref().map(file),
                        cmdline: d.cmdline_file.as_ref().map(|_| cmdline),
                        firmware: None,
                    },
                }
            });
        let boot = match case.boot {
            GoldenBoot::Disk => BootFrom::Disk {
                path: Path::new("/vm/a,b/disk.img"),
                direct: direct.as_ref(),
            },
            GoldenBoot::Network { data_disk } => BootFrom::Network {
                tftp_dir: Path::new("/srv/tftp,1"),
                bootfile: "boot.ipxe",
                romfile: Path::new("/usr/lib/ipxe/qemu/efi-virtio.rom"),
                data_disk: data_disk.then_some(Path::new("/vm/data.img")),
            },
        };
        let vm = match case.console {
            Console::Pipe => VmConfig::piped(spec, fw.as_ref(), boot, &o),
            Console::Terminal => VmConfig::on_terminal(spec, fw.as_ref(), boot, o.kvm),
        };
        Some(vm.args())
    }

    /// Sets the board-file spelling `disk` on `spec`.
    fn with_disk(spec: &QemuSpec, disk: &str) -> QemuSpec {
        let mut s = spec.clone();
        s.disk = serde_json::from_value(serde_json::Value::String(disk.into())).unwrap();
        s
    }

    /// The QEMU argument vectors of every board file booted every way (and of every disk
    /// interface), against `src/qemu/testdata/args.json`. `EDGEIMG_BLESS=1` rewrites the file.
    #[test]
    fn argument_vectors_match_the_golden_file() {
        let mut got = BTreeMap::new();
        let specs = board_specs();
        for (name, spec) in &specs {
            for case in CASES {
                if let Some(a) = case_args(spec, case) {
                    got.insert(format!("{name} {}", case.name), a);
                }
            }
        }
        let x86 = &specs.iter().find(|(n, _)| n == "x86-64").unwrap().1;
        for disk in ["virtio", "nvme", "ahci", "sata", "usb", "sd", "none"] {
            let a = case_args(&with_disk(x86, disk), &CASES[0]).unwrap();
            got.insert(format!("x86-64 disk={disk}"), a);
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/qemu/testdata/args.json");
        if std::env::var_os("EDGEIMG_BLESS").is_some() {
            let lines: Vec<String> = got
                .iter()
                .map(|(k, v)| {
                    format!(
                        "  {}: {}",
                        serde_json::to_string(k).unwrap(),
                        serde_json::to_string(v).unwrap()
                    )
                })
                .collect();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("{{\n{}\n}}\n", lines.join(",\n"))).unwrap();
        }
        let want: BTreeMap<String, Vec<String>> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let keys: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
        let differ: Vec<String> = keys
            .into_iter()
            .filter(|k| want.get(*k) != got.get(*k))
            .map(|k| format!("{k}:\n  want {:?}\n  got  {:?}", want.get(k), got.get(k)))
            .collect();
        assert!(
            differ.is_empty(),
            "arguments differ from {} (EDGEIMG_BLESS=1 rewrites it):\n{}",
            path.display(),
            differ.join("\n")
        );
    }
}
