//! The few DER encodings PKCS#7 signatures need, written directly: a tag, a length, content.

use crate::util::time::Civil;

/// `tag` with `content` as its value.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// SEQUENCE of already encoded parts.
pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// SET OF already encoded parts, sorted as DER wants.
pub fn set_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut v: Vec<&[u8]> = parts.to_vec();
    v.sort();
    tlv(0x31, &v.concat())
}

/// `[n]` EXPLICIT (constructed, context-specific).
pub fn explicit(n: u8, inner: &[u8]) -> Vec<u8> {
    tlv(0xa0 | n, inner)
}

/// An OBJECT IDENTIFIER from its dotted form.
pub fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().unwrap()).collect();
    let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &a in &arcs[2..] {
        let mut chunk = vec![(a & 0x7f) as u8];
        let mut rest = a >> 7;
        while rest > 0 {
            chunk.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    }
    tlv(0x06, &body)
}

/// A small non-negative INTEGER.
pub fn int(v: u64) -> Vec<u8> {
    let mut b: Vec<u8> = v
        .to_be_bytes()
        .iter()
        .copied()
        .skip_while(|&x| x == 0)
        .collect();
    if b.first().is_none_or(|&x| x & 0x80 != 0) {
        b.insert(0, 0);
    }
    tlv(0x02, &b)
}

pub fn octets(b: &[u8]) -> Vec<u8> {
    tlv(0x04, b)
}

pub const NULL: &[u8] = &[0x05, 0x00];

/// AlgorithmIdentifier with NULL parameters.
pub fn alg(dotted: &str) -> Vec<u8> {
    seq(&[&oid(dotted), NULL])
}

/// UTCTime of a Unix time (1950-2049), as `YYMMDDHHMMSSZ`.
pub fn utc_time(unix: u64) -> Vec<u8> {
    let c = Civil::from_unix(unix);
    let text = format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        c.year % 100,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second
    );
    tlv(0x17, text.as_bytes())
}

/// The content bytes of a DER element (without its tag and length).
pub fn content(b: &[u8]) -> &[u8] {
    let l = b[1] as usize;
    if l < 0x80 {
        &b[2..2 + l]
    } else {
        let n = l & 0x7f;
        let len = b[2..2 + n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | x as usize);
        &b[2 + n..2 + n + len]
    }
}

/// The DER elements one after another in `b`, each whole (tag, length, content).
pub fn split(mut b: &[u8]) -> anyhow::Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        anyhow::ensure!(b.len() >= 2, "a DER element is cut short");
        let l = b[1] as usize;
        let (hdr, len) = if l < 0x80 {
            (2, l)
        } else {
            let n = l & 0x7f;
            anyhow::ensure!(n <= 4 && b.len() >= 2 + n, "a DER length is malformed");
            (
                2 + n,
                b[2..2 + n]
                    .iter()
                    .fold(0usize, |a, &x| (a << 8) | x as usize),
            )
        };
        anyhow::ensure!(b.len() >= hdr + len, "a DER element is cut short");
        out.push(&b[..hdr + len]);
        b = &b[hdr + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(
            oid("1.2.840.113549.1.7.2"),
            hex::decode("06092a864886f70d010702").unwrap()
        );
        assert_eq!(int(1), vec![2, 1, 1]);
        assert_eq!(int(128), vec![2, 2, 0, 128]);
        assert_eq!(tlv(4, &[0; 200])[..3], [4, 0x81, 200]);
        assert_eq!(utc_time(0), tlv(0x17, b"700101000000Z"));
        assert_eq!(utc_time(1_700_000_000), tlv(0x17, b"231114221320Z"));
        let s = seq(&[&int(5)]);
        assert_eq!(content(&s), &int(5)[..]);
    }
}
