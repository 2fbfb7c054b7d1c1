//! U-Boot's legacy image format for a boot script (`boot.scr`), as `mkimage -T script`
//! writes it (and for a kernel, `mkimage -T kernel`, which the QEMU harness uses): a 64-byte big-endian header (magic, header CRC, time, size, load and entry
//! addresses, data CRC, OS, architecture, type, compression, a 32-byte name), then the
//! "multi-file" body U-Boot's `source` command reads: each part's length as a big-endian
//! word, a zero word, then the parts, each padded to 4 bytes. The time is 0, so the bytes
//! depend on the text alone (reproducible builds).

const MAGIC: u32 = 0x2705_1956;
const OS_LINUX: u8 = 5;
const TYPE_KERNEL: u8 = 2;
const TYPE_SCRIPT: u8 = 6;
const COMP_NONE: u8 = 0;
const NAME_LEN: usize = 32;

/// The header's architecture field (U-Boot's `IH_ARCH_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageArch {
    Arm = 2,
    Arm64 = 22,
}

/// `text` as a U-Boot script image named `name` (cut to 31 bytes: the field ends in NUL).
pub fn script_image(text: &str, name: &str, arch: ImageArch) -> Vec<u8> {
    let script = text.as_bytes();
    let mut data = Vec::with_capacity(script.len() + 12);
    data.extend_from_slice(&(script.len() as u32).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(script);
    data.resize(data.len().next_multiple_of(4), 0);
    legacy_image(TYPE_SCRIPT, arch, 0, &data, name)
}

/// `kernel` (any program started the way a Linux kernel is: U-Boot itself, or a zImage) as
/// a legacy kernel image that is loaded at, and entered at, `load`.
///
/// QEMU's `-kernel` loads a raw 32-bit ARM file at RAM + 0x10000, where a zImage (position
/// independent) runs but U-Boot (linked at 0x8000) does not; from a legacy image it takes
/// the load address, and still starts the program as a Linux kernel (r2 = the device
/// tree, the other CPUs parked). The harness that plays the Pi firmware uses it for the
/// firmware's 32-bit `kernel_address`, 0x8000.
pub fn kernel_image(kernel: &[u8], name: &str, arch: ImageArch, load: u32) -> Vec<u8> {
    legacy_image(TYPE_KERNEL, arch, load, kernel, name)
}

/// The 64-byte header over `data`, then `data`.
fn legacy_image(kind: u8, arch: ImageArch, load: u32, data: &[u8], name: &str) -> Vec<u8> {
    let header = |hcrc: u32| {
        let mut h = Vec::with_capacity(64);
        for word in [
            MAGIC,
            hcrc,
            0, // time
            data.len() as u32,
            load, // load address
            load, // entry point
            crc32fast::hash(data),
        ] {
            h.extend_from_slice(&word.to_be_bytes());
        }
        h.extend_from_slice(&[OS_LINUX, arch as u8, kind, COMP_NONE]);
        let mut n = [0u8; NAME_LEN];
        let b = name.as_bytes();
        let len = b.len().min(NAME_LEN - 1);
        n[..len].copy_from_slice(&b[..len]);
        h.extend_from_slice(&n);
        h
    };
    let mut out = header(crc32fast::hash(&header(0)));
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn the_header_checks_itself_and_the_body() {
        let img = script_image("echo hi\n", "edgeimg", ImageArch::Arm64);
        assert_eq!(be(&img, 0), MAGIC);
        let mut h = img[..64].to_vec();
        h[4..8].fill(0);
        assert_eq!(be(&img, 4), crc32fast::hash(&h));
        assert_eq!(be(&img, 12) as usize, img.len() - 64);
        assert_eq!(be(&img, 24), crc32fast::hash(&img[64..]));
        assert_eq!(&img[28..32], &[5, 22, 6, 0]);
        // Body: one part of 8 bytes, the end word, the text (already a multiple of 4).
        assert_eq!((be(&img, 64), be(&img, 68)), (8, 0));
        assert_eq!(&img[72..], b"echo hi\n");
        assert_eq!(img.len() % 4, 0);
    }

    #[test]
    fn the_text_is_padded_and_the_name_cut() {
        let img = script_image("x", &"n".repeat(40), ImageArch::Arm);
        assert_eq!(be(&img, 64), 1);
        assert_eq!(&img[72..], b"x\0\0\0");
        assert_eq!(img[32 + 31], 0);
        assert_eq!(img[29], 2);
    }

    #[test]
    fn a_kernel_image_names_its_load_address() {
        let img = kernel_image(b"\x01\x02\x03\x04\x05", "u-boot", ImageArch::Arm, 0x8000);
        assert_eq!((be(&img, 16), be(&img, 20)), (0x8000, 0x8000));
        assert_eq!(&img[28..32], &[5, 2, 2, 0]);
        assert_eq!(be(&img, 12), 5);
        assert_eq!(&img[64..], b"\x01\x02\x03\x04\x05");
        assert_eq!(be(&img, 24), crc32fast::hash(&img[64..]));
    }

    /// U-Boot's own `mkimage -l` (u-boot-tools, a test dependency) reads the header as
    /// QEMU and U-Boot do: checksums good, type, architecture and addresses as written.
    #[test]
    fn mkimage_lists_the_kernel_image_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u-boot.img");
        std::fs::write(
            &path,
            kernel_image(&[0xa5; 1000], "u-boot.bin", ImageArch::Arm, 0x8000),
        )
        .unwrap();
        let o = std::process::Command::new("mkimage")
            .arg("-l")
            .arg(&path)
            .output()
            .expect("mkimage (u-boot-tools)");
        let listed = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{listed}");
        // And byte for byte what mkimage itself writes (its time from SOURCE_DATE_EPOCH).
        let theirs = dir.path().join("theirs.img");
        let data = dir.path().join("data");
        std::fs::write(&data, [0xa5; 1000]).unwrap();
        let o = std::process::Command::new("mkimage")
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["-A", "arm", "-O", "linux", "-T", "kernel", "-C", "none"])
            .args(["-a", "0x8000", "-e", "0x8000", "-n", "u-boot.bin", "-d"])
            .arg(&data)
            .arg(&theirs)
            .output()
            .expect("mkimage (u-boot-tools)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            std::fs::read(&theirs).unwrap(),
            std::fs::read(&path).unwrap()
        );
        for want in [
            "Image Name:   u-boot.bin",
            "Image Type:   ARM Linux Kernel Image (uncompressed)",
            "Load Address: 00008000",
            "Entry Point:  00008000",
        ] {
            assert!(listed.contains(want), "{want:?} not in:\n{listed}");
        }
    }
}
