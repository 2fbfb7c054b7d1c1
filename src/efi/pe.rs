//! PE32+ images as UEFI loads them: reading the headers and sections, adding sections the way
//! systemd's `ukify` lays a Unified Kernel Image out, the Authenticode digest, the PE
//! checksum, and the certificate table a signature lives in.
//!
//! Layout rules for added sections (those of ukify): each new section header goes after the
//! last one, inside `SizeOfHeaders`; its data starts at the end of the file rounded up to
//! `FileAlignment`, its size on disk is rounded up to `FileAlignment`; its virtual address
//! follows the previous section's end rounded up to `SectionAlignment`, so no two sections
//! overlap in memory; `SizeOfImage` covers the last one. A section the stub already has
//! (`.sbat`) is rewritten in place when the new text fits its size on disk.

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

const SECTION_HEADER: usize = 40;
/// `IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_READ`
const SCN_CODE_READ: u32 = 0x0000_0020 | 0x4000_0000;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ`
const SCN_DATA_READ: u32 = 0x0000_0040 | 0x4000_0000;
/// Index of the certificate table among the optional header's data directories.
const DIR_SECURITY: usize = 4;

/// One section header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub raw_size: u32,
    pub raw_offset: u32,
    pub characteristics: u32,
}

/// Where the headers of a PE32+ image sit.
#[derive(Clone, Debug)]
pub struct Pe {
    /// Offset of the COFF file header (after `PE\0\0`).
    coff: usize,
    /// Offset of the optional header.
    opt: usize,
    /// Offset of the first section header.
    sections_at: usize,
    pub sections: Vec<Section>,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_headers: u32,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let s = b.get(at..at + 2).context("the PE file is cut short")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b.get(at..at + 4).context("the PE file is cut short")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

impl Pe {
    /// Reads the headers of a PE32+ image (an EFI application such as systemd-boot, the
    /// stub, or a UKI).
    pub fn parse(b: &[u8]) -> Result<Pe> {
        ensure!(b.get(..2) == Some(b"MZ"), "not a PE file (no MZ header)");
        let pe = u32_at(b, 0x3c)? as usize;
        ensure!(
            b.get(pe..pe + 4) == Some(b"PE\0\0"),
            "not a PE file (no PE signature)"
        );
        let coff = pe + 4;
        let nsections = u16_at(b, coff + 2)? as usize;
        let opt_size = u16_at(b, coff + 16)? as usize;
        let opt = coff + 20;
        ensure!(
            u16_at(b, opt)? == 0x20b,
            "not a PE32+ (64-bit) image: the optional header's magic is {:#x}",
            u16_at(b, opt)?
        );
        ensure!(opt_size >= 112 + 16 * 8, "the optional header is too short");
        let sections_at = opt + opt_size;
        let mut sections = Vec::with_capacity(nsections);
        for i in 0..nsections {
            let h = sections_at + i * SECTION_HEADER;
            let raw = b.get(h..h + 8).context("the section table is cut short")?;
            let name = String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_string();
            sections.push(Section {
                name,
                virtual_size: u32_at(b, h + 8)?,
                virtual_address: u32_at(b, h + 12)?,
                raw_size: u32_at(b, h + 16)?,
                raw_offset: u32_at(b, h + 20)?,
                characteristics: u32_at(b, h + 36)?,
            });
        }
        let (section_alignment, file_alignment) = (u32_at(b, opt + 32)?, u32_at(b, opt + 36)?);
        ensure!(
            section_alignment.is_power_of_two() && file_alignment.is_power_of_two(),
            "the PE alignments ({section_alignment:#x}, {file_alignment:#x}) are not powers of two"
        );
        Ok(Pe {
            coff,
            opt,
            sections_at,
            sections,
            section_alignment,
            file_alignment,
            size_of_headers: u32_at(b, opt + 60)?,
        })
    }

    /// The bytes of a section as loaded (its virtual size, cut to what the file holds).
    pub fn section_data<'a>(&self, b: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let s = self.sections.iter().find(|s| s.name == name)?;
        let len = s.virtual_size.min(s.raw_size) as usize;
        b.get(s.raw_offset as usize..s.raw_offset as usize + len)
    }

    /// Offset of the checksum field.
    fn checksum_at(&self) -> usize {
        self.opt + 64
    }

    /// Offset of the certificate table's data directory entry.
    fn security_dir_at(&self) -> usize {
        self.opt + 112 + DIR_SECURITY * 8
    }

    /// The certificate table (file offset, size), when the image is signed.
    pub fn certificate_table(&self, b: &[u8]) -> Result<Option<(u32, u32)>> {
        let at = self.security_dir_at();
        let (off, size) = (u32_at(b, at)?, u32_at(b, at + 4)?);
        Ok((off != 0 && size != 0).then_some((off, size)))
    }

    /// End of the last section's data in the file.
    fn end_of_sections(&self) -> u64 {
        self.sections
            .iter()
            .map(|s| s.raw_offset as u64 + s.raw_size as u64)
            .max()
            .unwrap_or(self.size_of_headers as u64)
    }
}

/// The sections a UKI adds to the stub, in ukify's order (`.linux` last).
pub struct UkiSections<'a> {
    pub osrel: &'a [u8],
    pub cmdline: &'a [u8],
    pub uname: &'a [u8],
    /// SBAT lines to append to the stub's own (without the `sbat,1,...` header line).
    pub sbat: &'a str,
    pub initrd: &'a [u8],
    pub linux: &'a [u8],
}

/// Builds a Unified Kernel Image from systemd-stub and its parts.
pub fn assemble_uki(stub: &[u8], parts: &UkiSections) -> Result<Vec<u8>> {
    let pe = Pe::parse(stub).context("reading the systemd-stub")?;
    if pe.certificate_table(stub)?.is_some() {
        bail!("the systemd-stub is already signed: a signed stub cannot take new sections");
    }
    for s in &pe.sections {
        ensure!(
            (s.raw_offset as u64).is_multiple_of(pe.file_alignment as u64),
            "the systemd-stub's section {} is not aligned to its FileAlignment",
            s.name
        );
        ensure!(
            ![".linux", ".initrd", ".cmdline", ".osrel", ".uname"].contains(&s.name.as_str()),
            "the systemd-stub already has a {} section",
            s.name
        );
    }
    let mut out = stub[..pe.end_of_sections() as usize].to_vec();
    // .sbat: the stub's lines, then ours, rewritten in place.
    if let Some(i) = pe.sections.iter().position(|s| s.name == ".sbat") {
        let s = &pe.sections[i];
        let old = pe.section_data(stub, ".sbat").unwrap_or_default();
        let text = String::from_utf8_lossy(old)
            .trim_end_matches('\0')
            .to_string();
        let mut merged = text.trim_end().to_string();
        merged.push('\n');
        merged.push_str(parts.sbat);
        if !merged.ends_with('\n') {
            merged.push('\n');
        }
        let mut data = merged.into_bytes();
        data.push(0);
        ensure!(
            data.len() <= s.raw_size as usize,
            "the merged .sbat ({} bytes) does not fit the stub's .sbat section ({} bytes)",
            data.len(),
            s.raw_size
        );
        let at = s.raw_offset as usize;
        out[at..at + s.raw_size as usize].fill(0);
        out[at..at + data.len()].copy_from_slice(&data);
        put_u32(
            &mut out,
            pe.sections_at + i * SECTION_HEADER + 8,
            data.len() as u32,
        );
    }
    let added: [(&str, &[u8]); 5] = [
        (".osrel", parts.osrel),
        (".cmdline", parts.cmdline),
        (".uname", parts.uname),
        (".initrd", parts.initrd),
        (".linux", parts.linux),
    ];
    let fa = pe.file_alignment as u64;
    let sa = pe.section_alignment as u64;
    let mut n = pe.sections.len();
    let mut next_va = pe
        .sections
        .iter()
        .map(|s| s.virtual_address as u64 + s.virtual_size as u64)
        .max()
        .unwrap_or(0);
    let mut init_data = u32_at(&out, pe.opt + 8)? as u64;
    for (name, data) in added {
        let h = pe.sections_at + n * SECTION_HEADER;
        ensure!(
            h + SECTION_HEADER <= pe.size_of_headers as usize,
            "the systemd-stub has no room in its headers for the {name} section header"
        );
        ensure!(
            out[h..h + SECTION_HEADER].iter().all(|&b| b == 0),
            "the systemd-stub's headers hold data where the {name} section header goes"
        );
        ensure!(!data.is_empty(), "the UKI's {name} section would be empty");
        let raw_offset = round_up(out.len() as u64, fa);
        let raw_size = round_up(data.len() as u64, fa);
        let va = round_up(next_va, sa);
        ensure!(
            raw_offset + raw_size <= u32::MAX as u64 && va + data.len() as u64 <= u32::MAX as u64,
            "the UKI would be larger than 4 GiB"
        );
        out.resize(raw_offset as usize, 0);
        out.extend_from_slice(data);
        out.resize((raw_offset + raw_size) as usize, 0);
        let mut name8 = [0u8; 8];
        name8[..name.len()].copy_from_slice(name.as_bytes());
        out[h..h + 8].copy_from_slice(&name8);
        put_u32(&mut out, h + 8, data.len() as u32);
        put_u32(&mut out, h + 12, va as u32);
        put_u32(&mut out, h + 16, raw_size as u32);
        put_u32(&mut out, h + 20, raw_offset as u32);
        let flags = if name == ".linux" {
            SCN_CODE_READ
        } else {
            SCN_DATA_READ
        };
        put_u32(&mut out, h + 36, flags);
        next_va = va + data.len() as u64;
        init_data += data.len() as u64;
        n += 1;
    }
    put_u16(&mut out, pe.coff + 2, n as u16);
    put_u32(&mut out, pe.opt + 8, init_data.min(u32::MAX as u64) as u32);
    put_u32(&mut out, pe.opt + 56, round_up(next_va, sa) as u32);
    set_checksum(&mut out)?;
    Ok(out)
}

/// The Authenticode SHA-256 digest of an image: the headers without the checksum and the
/// certificate table entry, every section's data in file order, then whatever follows them
/// up to the certificate table.
pub fn authenticode_digest(b: &[u8]) -> Result<[u8; 32]> {
    let pe = Pe::parse(b)?;
    let mut h = Sha256::new();
    let cks = pe.checksum_at();
    let sec = pe.security_dir_at();
    let hdr = (pe.size_of_headers as usize).min(b.len());
    h.update(&b[..cks]);
    h.update(&b[cks + 4..sec]);
    h.update(&b[sec + 8..hdr]);
    let mut sections: Vec<&Section> = pe.sections.iter().filter(|s| s.raw_size > 0).collect();
    sections.sort_by_key(|s| s.raw_offset);
    let mut end = hdr as u64;
    for s in sections {
        let (a, z) = (
            s.raw_offset as usize,
            s.raw_offset as usize + s.raw_size as usize,
        );
        h.update(
            b.get(a..z).with_context(|| {
                format!("the section {} reaches past the end of the file", s.name)
            })?,
        );
        end = end.max(z as u64);
    }
    let stop = match pe.certificate_table(b)? {
        Some((off, _)) => off as u64,
        None => b.len() as u64,
    };
    if stop > end {
        h.update(&b[end as usize..stop as usize]);
    }
    Ok(h.finalize().into())
}

/// Sets the PE checksum field to the image's checksum (the field is left out of the digest).
pub fn set_checksum(b: &mut [u8]) -> Result<()> {
    let at = Pe::parse(b)?.checksum_at();
    put_u32(b, at, 0);
    let mut sum: u64 = 0;
    let mut chunks = b.chunks(2);
    for c in &mut chunks {
        let w = if c.len() == 2 {
            u16::from_le_bytes([c[0], c[1]])
        } else {
            c[0] as u16
        };
        sum += w as u64;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    let total = sum as u32 + b.len() as u32;
    put_u32(b, at, total);
    Ok(())
}

/// Appends an Authenticode signature (DER `ContentInfo` of PKCS#7 SignedData) as the image's
/// certificate table and updates the checksum. The image must not be signed yet.
pub fn embed_signature(b: &mut Vec<u8>, pkcs7: &[u8]) -> Result<()> {
    let pe = Pe::parse(b)?;
    ensure!(
        pe.certificate_table(b)?.is_none(),
        "the image is signed already"
    );
    let at = b.len();
    // WIN_CERTIFICATE: dwLength, wRevision 2.0, wCertificateType PKCS_SIGNED_DATA; the
    // entry is padded to 8 bytes.
    let len = 8 + pkcs7.len();
    let padded = round_up(len as u64, 8) as usize;
    b.extend_from_slice(&(padded as u32).to_le_bytes());
    b.extend_from_slice(&0x0200u16.to_le_bytes());
    b.extend_from_slice(&0x0002u16.to_le_bytes());
    b.extend_from_slice(pkcs7);
    b.resize(at + padded, 0);
    let sec = pe.security_dir_at();
    put_u32(b, sec, at as u32);
    put_u32(b, sec + 4, padded as u32);
    set_checksum(b)
}

/// Pads an unsigned image to 8 bytes, where a certificate table may start (the padding is
/// part of the signed digest, as `sbsign` does it).
pub fn pad_for_signature(b: &mut Vec<u8>) {
    let len = round_up(b.len() as u64, 8) as usize;
    b.resize(len, 0);
}

/// The signature (DER PKCS#7 `ContentInfo`) of a signed image, when it has one.
pub fn signature(b: &[u8]) -> Result<Option<&[u8]>> {
    let pe = Pe::parse(b)?;
    let Some((off, size)) = pe.certificate_table(b)? else {
        return Ok(None);
    };
    let entry = b
        .get(off as usize..off as usize + size as usize)
        .context("the certificate table reaches past the end of the file")?;
    ensure!(entry.len() >= 8, "the certificate table is too short");
    let len = (u32_at(entry, 0)? as usize).min(entry.len());
    Ok(Some(&entry[8..len]))
}
