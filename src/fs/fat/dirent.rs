//! Directory entries: 8.3 short names, VFAT long-name (LFN) entries, DOS timestamps, and the
//! parser that turns a directory's bytes back into named entries.

use std::collections::HashSet;

use super::layout::{le16, le32, put16, put32};
use crate::util::time::Civil;

pub(crate) const ENTRY_SIZE: usize = 32;
pub(crate) const ATTR_DIR: u8 = 0x10;
pub(crate) const ATTR_ARCHIVE: u8 = 0x20;
pub(crate) const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_LFN: u8 = 0x0F;
const LFN_LAST: u8 = 0x40;
const CHARS_PER_LFN: usize = 13;
/// Where the 13 UTF-16 units of an LFN entry sit.
const LFN_SLOTS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
pub(crate) const DELETED: u8 = 0xE5;
/// NT "case" bits: the short name's base / extension is really lower case.
const NT_LOWER_BASE: u8 = 0x08;
const NT_LOWER_EXT: u8 = 0x10;

pub(crate) type ShortName = [u8; 11];

/// Characters allowed in a short name besides A-Z and 0-9.
const SHORT_SPECIALS: &[u8] = b"!#$%&'()-@^_`{}~";

fn is_short_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || SHORT_SPECIALS.contains(&b)
}

/// Checks that `name` can be a long file name; the error says why not.
pub(crate) fn check_long_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("empty, \".\" or \"..\"".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| (*c as u32) < 0x20 || "\"*/:<>?\\|".contains(*c))
    {
        return Err(format!("it contains {c:?}, which FAT does not allow"));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err("it ends with a dot or a space, which FAT drops".into());
    }
    if name.encode_utf16().count() > 255 {
        return Err("longer than 255 UTF-16 units".into());
    }
    Ok(())
}

/// The 11-byte form of `name` when it already is a valid upper-case 8.3 name.
pub(crate) fn exact_short_name(name: &str) -> Option<ShortName> {
    let (base, ext) = match name.rfind('.') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (name, ""),
    };
    let dotted = name.contains('.');
    let valid = !base.is_empty()
        && base.len() <= 8
        && ext.len() <= 3
        && (!dotted || !ext.is_empty())
        && base.bytes().chain(ext.bytes()).all(is_short_char);
    valid.then(|| pack(base.as_bytes(), ext.as_bytes()))
}

fn pack(base: &[u8], ext: &[u8]) -> ShortName {
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base);
    out[8..8 + ext.len()].copy_from_slice(ext);
    out
}

/// The short-name basis (Windows' algorithm): upper-cased, invalid characters as `_`, spaces
/// and extra dots dropped, base cut to 8 and extension to 3. `lossy` says whether anything
/// but the case changed, in which case a `~N` tail is required.
fn basis(name: &str) -> (Vec<u8>, Vec<u8>, bool) {
    let mut lossy = false;
    let trimmed = name.trim_start_matches('.');
    lossy |= trimmed.len() != name.len();
    let (base, ext) = match trimmed.rfind('.') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    let mut convert = |s: &str, max: usize| {
        let mut out = Vec::new();
        for ch in s.chars() {
            if ch == ' ' || ch == '.' {
                lossy = true;
                continue;
            }
            let up = ch.to_ascii_uppercase();
            if up.is_ascii() && is_short_char(up as u8) {
                out.push(up as u8);
            } else {
                lossy = true;
                out.push(b'_');
            }
        }
        if out.len() > max {
            out.truncate(max);
            lossy = true;
        }
        out
    };
    let mut b = convert(base, 8);
    let e = convert(ext, 3);
    if b.is_empty() {
        b.push(b'_');
        lossy = true;
    }
    (b, e, lossy)
}

/// Hands out short names unique within one directory, deterministically: the same names
/// asked in the same order get the same answers.
#[derive(Default)]
pub(crate) struct ShortNames {
    used: HashSet<ShortName>,
}

impl ShortNames {
    /// Marks a short name as taken (names already in the directory, exact 8.3 names).
    pub fn reserve(&mut self, short: ShortName) {
        self.used.insert(short);
    }

    /// The short name for `long`, and whether `long` needs LFN entries.
    pub fn assign(&mut self, long: &str) -> (ShortName, bool) {
        if let Some(exact) = exact_short_name(long) {
            // Reserved up front by the caller, or free: either way it is this entry's own name.
            self.used.insert(exact);
            return (exact, false);
        }
        let (base, ext, lossy) = basis(long);
        let plain = pack(&base, &ext);
        if !lossy && !self.used.contains(&plain) {
            self.used.insert(plain);
            return (plain, true);
        }
        for n in 1u32.. {
            let tail = format!("~{n}");
            let keep = base.len().min(8 - tail.len());
            let mut b = base[..keep].to_vec();
            b.extend_from_slice(tail.as_bytes());
            let candidate = pack(&b, &ext);
            if self.used.insert(candidate) {
                return (candidate, true);
            }
        }
        unreachable!("a directory holds at most 65536 entries, far fewer than the numeric tails")
    }
}

/// The checksum of a short name that every LFN entry of the same file carries.
pub(crate) fn lfn_checksum(short: &ShortName) -> u8 {
    short.iter().fold(0u8, |sum, &b| {
        ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(b)
    })
}

/// The LFN entries for `long`, in the order they are stored (highest ordinal first).
pub(crate) fn lfn_entries(long: &str, short: &ShortName) -> Vec<[u8; ENTRY_SIZE]> {
    let mut units: Vec<u16> = long.encode_utf16().collect();
    if !units.len().is_multiple_of(CHARS_PER_LFN) {
        units.push(0);
        while !units.len().is_multiple_of(CHARS_PER_LFN) {
            units.push(0xFFFF);
        }
    }
    let count = units.len() / CHARS_PER_LFN;
    let checksum = lfn_checksum(short);
    (0..count)
        .rev()
        .map(|i| {
            let mut e = [0u8; ENTRY_SIZE];
            e[0] = (i + 1) as u8 | if i + 1 == count { LFN_LAST } else { 0 };
            e[11] = ATTR_LFN;
            e[13] = checksum;
            for (slot, unit) in LFN_SLOTS
                .iter()
                .zip(&units[i * CHARS_PER_LFN..(i + 1) * CHARS_PER_LFN])
            {
                put16(&mut e, *slot, *unit);
            }
            e
        })
        .collect()
}

/// A short (8.3) entry with all timestamps at `mtime`.
pub(crate) fn short_entry(
    name: &ShortName,
    attr: u8,
    cluster: u32,
    size: u32,
    mtime: u64,
) -> [u8; ENTRY_SIZE] {
    let mut e = [0u8; ENTRY_SIZE];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    set_cluster(&mut e, cluster);
    put32(&mut e, 28, size);
    set_times(&mut e, mtime);
    e
}

pub(crate) fn set_cluster(e: &mut [u8], cluster: u32) {
    put16(e, 20, (cluster >> 16) as u16);
    put16(e, 26, cluster as u16);
}

/// Sets creation, access and modification times (access has a date only).
pub(crate) fn set_times(e: &mut [u8], mtime: u64) {
    let (date, time) = dos_datetime(mtime);
    e[13] = ((mtime % 2) * 100) as u8; // creation time, 10 ms units beyond the 2 s of `time`
    put16(e, 14, time);
    put16(e, 16, date);
    put16(e, 18, date);
    put16(e, 22, time);
    put16(e, 24, date);
}

/// `.` and `..` for a new directory; `parent` is 0 when the parent is the root.
pub(crate) fn dot_entries(own: u32, parent: u32, mtime: u64) -> [[u8; ENTRY_SIZE]; 2] {
    [
        short_entry(b".          ", ATTR_DIR, own, 0, mtime),
        short_entry(b"..         ", ATTR_DIR, parent, 0, mtime),
    ]
}

/// DOS date and time (2-second resolution, years 1980-2107, clamped) of a Unix time, in UTC.
pub(crate) fn dos_datetime(unix: u64) -> (u16, u16) {
    const MIN: u64 = 315_532_800; // 1980-01-01
    const MAX: u64 = 4_354_819_198; // 2107-12-31 23:59:58
    let t = unix.clamp(MIN, MAX);
    let c = Civil::from_unix(t);
    let date = (((c.year - 1980) as u16) << 9) | ((c.month as u16) << 5) | c.day as u16;
    let time = ((c.hour as u16) << 11) | ((c.minute as u16) << 5) | (c.second / 2) as u16;
    (date, time)
}

/// The Unix time of a DOS date and time (UTC).
pub(crate) fn unix_from_dos(date: u16, time: u16) -> u64 {
    let y = 1980 + i64::from(date >> 9);
    let m = u32::from((date >> 5) & 0xF).clamp(1, 12);
    let d = u32::from(date & 0x1F).max(1);
    let days = crate::util::time::days_from_civil(y, m, d);
    let secs = u64::from(time >> 11) * 3600
        + u64::from((time >> 5) & 0x3F) * 60
        + u64::from(time & 0x1F) * 2;
    days.max(0) as u64 * 86_400 + secs
}

/// One live entry of a directory as read back.
#[derive(Clone, Debug)]
pub(crate) struct DirItem {
    /// The long name when a valid one precedes the short entry, else the short name.
    pub name: String,
    pub short: ShortName,
    pub attr: u8,
    pub first_cluster: u32,
    pub size: u32,
    pub mtime: u64,
    /// Index of the first 32-byte slot of the entry (its first LFN entry, or the short entry).
    pub first_slot: usize,
    /// Index of the short entry's slot.
    pub short_slot: usize,
}

impl DirItem {
    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIR != 0
    }

    /// The short name as text ("README~1.TXT").
    pub fn short_display(&self) -> String {
        short_display(&self.short, 0)
    }

    /// Case-insensitive match on the long or the short name, as FAT lookups do.
    pub fn matches(&self, name: &str) -> bool {
        let want = name.to_uppercase();
        self.name.to_uppercase() == want || self.short_display() == want
    }
}

fn short_display(short: &ShortName, nt_flags: u8) -> String {
    let mut raw = *short;
    if raw[0] == 0x05 {
        raw[0] = DELETED; // 0x05 stands for a real 0xE5 first byte
    }
    let text = |bytes: &[u8], lower: bool| {
        let s: String = bytes
            .iter()
            .map(|&b| char::from(b))
            .collect::<String>()
            .trim_end()
            .to_string();
        if lower {
            s.to_ascii_lowercase()
        } else {
            s
        }
    };
    let base = text(&raw[..8], nt_flags & NT_LOWER_BASE != 0);
    let ext = text(&raw[8..], nt_flags & NT_LOWER_EXT != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// The parsed content of a directory.
pub(crate) struct ParsedDir {
    pub items: Vec<DirItem>,
    /// Slot index of the end marker (first byte 0), or the slot count when there is none.
    pub end: usize,
}

/// LFN entries collected while walking towards their short entry.
struct PendingLfn {
    first_slot: usize,
    checksum: u8,
    next_ordinal: u8,
    /// Parts by ordinal - 1.
    parts: Vec<[u16; CHARS_PER_LFN]>,
}

/// Parses a directory's bytes: live entries with their names, skipping `.`, `..`, deleted
/// entries and the volume label. Orphaned or mismatched LFN entries are ignored (the short
/// name is used), as every FAT driver does.
pub(crate) fn parse_dir(data: &[u8]) -> ParsedDir {
    let slots = data.len() / ENTRY_SIZE;
    let mut items = Vec::new();
    let mut pending: Option<PendingLfn> = None;
    for i in 0..slots {
        let e = &data[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
        if e[0] == 0 {
            return ParsedDir { items, end: i };
        }
        if e[0] == DELETED {
            pending = None;
            continue;
        }
        let attr = e[11];
        if attr & 0x3F == ATTR_LFN {
            pending = take_lfn(pending, e, i);
            continue;
        }
        let lfn = pending.take();
        if attr & ATTR_VOLUME_ID != 0 || e[0] == b'.' {
            continue;
        }
        let mut short = [0u8; 11];
        short.copy_from_slice(&e[..11]);
        let long = lfn.filter(|l| l.next_ordinal == 0 && l.checksum == lfn_checksum(&short));
        let (name, first_slot) = match long {
            Some(l) => (assemble(&l.parts), l.first_slot),
            None => (short_display(&short, e[12]), i),
        };
        items.push(DirItem {
            name,
            short,
            attr,
            first_cluster: (u32::from(le16(e, 20)) << 16) | u32::from(le16(e, 26)),
            size: le32(e, 28),
            mtime: unix_from_dos(le16(e, 24), le16(e, 22)),
            first_slot,
            short_slot: i,
        });
    }
    ParsedDir { items, end: slots }
}

fn take_lfn(pending: Option<PendingLfn>, e: &[u8], slot: usize) -> Option<PendingLfn> {
    let ordinal = e[0] & 0x1F;
    let mut units = [0u16; CHARS_PER_LFN];
    for (u, s) in units.iter_mut().zip(LFN_SLOTS) {
        *u = le16(e, s);
    }
    if e[0] & LFN_LAST != 0 {
        if ordinal == 0 {
            return None;
        }
        let mut parts = vec![[0u16; CHARS_PER_LFN]; ordinal as usize];
        parts[ordinal as usize - 1] = units;
        return Some(PendingLfn {
            first_slot: slot,
            checksum: e[13],
            next_ordinal: ordinal - 1,
            parts,
        });
    }
    let mut p = pending?;
    if ordinal == 0 || ordinal != p.next_ordinal || e[13] != p.checksum {
        return None;
    }
    p.parts[ordinal as usize - 1] = units;
    p.next_ordinal -= 1;
    Some(p)
}

fn assemble(parts: &[[u16; CHARS_PER_LFN]]) -> String {
    let units: Vec<u16> = parts
        .iter()
        .flatten()
        .copied()
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_short_names_need_no_long_name() {
        assert_eq!(&exact_short_name("BOOTX64.EFI").unwrap(), b"BOOTX64 EFI");
        assert_eq!(&exact_short_name("EFI").unwrap(), b"EFI        ");
        for not_exact in [
            "bootx64.efi",
            "LONGNAME1.TXT",
            "A.B.C",
            "X.ABCD",
            ".X",
            "A.",
            "A B",
            "A+B",
        ] {
            assert!(exact_short_name(not_exact).is_none(), "{not_exact}");
        }
    }

    #[test]
    fn short_names_are_unique_and_deterministic() {
        let mut names = ShortNames::default();
        names.reserve(exact_short_name("README.TXT").unwrap());
        assert_eq!(names.assign("README.TXT"), (*b"README  TXT", false));
        assert_eq!(names.assign("readme.txt"), (*b"README~1TXT", true));
        assert_eq!(names.assign("edgeimg.conf"), (*b"EDGEIM~1CON", true));
        assert_eq!(names.assign("edgeimg.config"), (*b"EDGEIM~2CON", true));
        assert_eq!(names.assign("start4.elf"), (*b"START4  ELF", true));
        assert_eq!(names.assign(".hidden"), (*b"HIDDEN~1   ", true));
        for i in 3..=12 {
            names.assign(&format!("edgeimg.conf{i}"));
        }
        // Two-digit tails shorten the base to keep 8 characters.
        assert_eq!(names.assign("edgeimg.conf13"), (*b"EDGEI~13CON", true));
    }

    #[test]
    fn lfn_entries_round_trip_through_the_parser() {
        let long = "bcm2711-rpi-4-b with a rather long name.dtb";
        let short = *b"BCM271~1DTB";
        let mut dir = Vec::new();
        for e in lfn_entries(long, &short) {
            dir.extend_from_slice(&e);
        }
        assert_eq!(dir.len(), 4 * ENTRY_SIZE, "43 units need 4 LFN entries");
        assert_eq!(
            dir[0], 0x44,
            "the first stored entry is ordinal 4 with the last flag"
        );
        dir.extend_from_slice(&short_entry(&short, ATTR_ARCHIVE, 7, 123, 1_700_000_000));
        dir.extend_from_slice(&[0u8; ENTRY_SIZE]);
        let parsed = parse_dir(&dir);
        assert_eq!(parsed.end, 5);
        let item = &parsed.items[0];
        assert_eq!(item.name, long);
        assert_eq!(
            (
                item.first_cluster,
                item.size,
                item.first_slot,
                item.short_slot
            ),
            (7, 123, 0, 4)
        );
        assert_eq!(item.mtime, 1_700_000_000);
        assert!(item.matches("BCM2711-RPI-4-B WITH A RATHER LONG NAME.DTB"));
        assert!(item.matches("bcm271~1.dtb"));
        // A broken checksum makes the parser fall back to the short name.
        dir[13] ^= 1;
        assert_eq!(parse_dir(&dir).items[0].name, "BCM271~1.DTB");
    }

    #[test]
    fn dos_times_convert_both_ways() {
        // 2023-11-14 22:13:20 UTC
        let (date, time) = dos_datetime(1_700_000_000);
        assert_eq!(date, ((2023 - 1980) << 9) | (11 << 5) | 14);
        assert_eq!(time, (22 << 11) | (13 << 5) | 10);
        assert_eq!(unix_from_dos(date, time), 1_700_000_000);
        assert_eq!(
            unix_from_dos(dos_datetime(0).0, dos_datetime(0).1),
            315_532_800
        );
    }

    #[test]
    fn invalid_long_names_are_explained() {
        assert!(check_long_name("a:b").is_err());
        assert!(check_long_name("trailing.").is_err());
        assert!(check_long_name(&"x".repeat(256)).is_err());
        assert!(check_long_name("ok name (1).txt").is_ok());
    }
}
