//! Image versions: dotted numbers (`1`, `2.1`, `2026.1127.104500`) compared numerically,
//! component by component, a missing component counting as 0 (`2` = `2.0`). Updates only go
//! to a newer version unless forced.

use std::cmp::Ordering;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageVersion(Vec<u64>);

impl ImageVersion {
    pub fn parse(s: &str) -> Result<ImageVersion, String> {
        if s.is_empty() {
            return Err("empty: give dotted numbers such as 1, 2.1 or 2026.1127.1".into());
        }
        let parts: Result<Vec<u64>, String> = s
            .split('.')
            .map(|p| {
                if p.is_empty() || p.len() > 18 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    Err(format!(
                        "{p:?} is not a number: an image version is dotted numbers such as 1, 2.1 or 2026.1127.1"
                    ))
                } else {
                    p.parse().map_err(|e| format!("{p:?}: {e}"))
                }
            })
            .collect();
        Ok(ImageVersion(parts?))
    }

    /// `YYYY.MMDD.HHMMSS` (UTC) of a source date epoch: newer snapshots give newer versions.
    pub fn from_epoch(epoch: u64) -> ImageVersion {
        let t = time::OffsetDateTime::from_unix_timestamp(epoch.min(253_402_300_799) as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        ImageVersion(vec![
            t.year() as u64,
            u64::from(u8::from(t.month())) * 100 + u64::from(t.day()),
            u64::from(t.hour()) * 10_000 + u64::from(t.minute()) * 100 + u64::from(t.second()),
        ])
    }
}

impl Ord for ImageVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.0.len().max(other.0.len());
        for i in 0..n {
            let a = self.0.get(i).copied().unwrap_or(0);
            let b = other.0.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for ImageVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ImageVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> ImageVersion {
        ImageVersion::parse(s).unwrap()
    }

    #[test]
    fn versions_compare_by_number_not_by_text() {
        assert!(v("10") > v("9"));
        assert!(v("2.10") > v("2.9"));
        assert_eq!(v("2").cmp(&v("2.0")), Ordering::Equal);
        assert!(v("2.0.1") > v("2"));
        assert!(v("1.99") < v("2"));
    }

    #[test]
    fn bad_versions_say_what_a_version_is() {
        for bad in ["", "1.", "v2", "1..2", "2-rc1", " 1"] {
            let e = ImageVersion::parse(bad).unwrap_err();
            assert!(e.contains("number") || e.contains("dotted"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn epoch_versions_follow_time() {
        // 2026-11-27 10:45:00 UTC
        assert_eq!(
            ImageVersion::from_epoch(1_795_776_300).to_string(),
            "2026.1127.104500"
        );
        assert!(ImageVersion::from_epoch(1_795_776_301) > ImageVersion::from_epoch(1_795_776_300));
        assert!(ImageVersion::from_epoch(1_800_000_000) > ImageVersion::from_epoch(1_795_776_300));
    }
}
