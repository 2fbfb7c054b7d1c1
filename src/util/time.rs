//! Calendar dates of Unix times, for the formats that spell them out (DER UTCTime, SPDX dates,
//! FAT timestamps). UTC only: builds take their time from the plan, never from the clock.

/// A Unix time split into its UTC calendar fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: u64,
    pub month: u64,
    pub day: u64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

impl Civil {
    /// Howard Hinnant's days-to-civil algorithm, for any time after 1970.
    pub fn from_unix(unix: u64) -> Civil {
        let days = unix / 86_400;
        let rem = unix % 86_400;
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year: year as u64,
            month: month as u64,
            day: day as u64,
            hour: rem / 3_600,
            minute: rem % 3_600 / 60,
            second: rem % 60,
        }
    }
}

/// Days since 1970-01-01 of a calendar date (the inverse of [`Civil::from_unix`]'s date part).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let c = Civil::from_unix(1_700_000_000);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (2023, 11, 14, 22, 13, 20)
        );
        let leap = Civil::from_unix(951_782_400); // 2000-02-29 00:00:00
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
        let epoch = Civil::from_unix(0);
        assert_eq!((epoch.year, epoch.month, epoch.day), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 2, 29) * 86_400, 951_782_400);
        assert_eq!(days_from_civil(2023, 11, 14), 1_700_000_000 / 86_400);
    }
}
