//! GUIDs and UUIDs derived from a seed (the plan hash), so that rebuilding the same plan gives
//! the same partition, disk and filesystem identifiers.

use sha2::{Digest, Sha256};

/// A GUID in RFC 4122 version-4 shape from sha256(seed || label), as lowercase text.
pub fn guid_from(seed: &[u8], label: &str) -> String {
    format_guid(&guid_bytes_from(seed, label))
}

/// The bytes of [`guid_from`] (for formats that store a UUID as 16 bytes).
pub fn guid_bytes_from(seed: &[u8], label: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(label.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    b
}

/// 16 bytes in the canonical `8-4-4-4-12` hex form, in byte order (GUIDs and UUIDs alike).
pub fn format_guid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parses GUID text into its 16 bytes in text order (big-endian fields).
pub fn parse_guid(text: &str) -> Option<[u8; 16]> {
    let hexdigits: String = text.chars().filter(|c| *c != '-').collect();
    if hexdigits.len() != 32 || text.len() != 36 {
        return None;
    }
    let v = hex::decode(hexdigits).ok()?;
    v.try_into().ok()
}
