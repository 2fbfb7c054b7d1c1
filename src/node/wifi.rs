//! The Wi-Fi key the device is given: never the passphrase, always the 256-bit pre-shared
//! key (PMK) wpa_supplicant derives from it, as 64 hex digits.
//!
//! wpa_supplicant's config file cannot carry every passphrase: in `psk="..."` it ends the
//! value at the line's last `"`, and a `#` may start a comment, so `password1"#x` is read as
//! `password1` or not at all. The PMK is PBKDF2-HMAC-SHA1 of the passphrase, salted with the
//! SSID, 4096 rounds, 32 bytes (IEEE 802.11i, what `wpa_passphrase SSID PASS` prints); in hex
//! it is written unquoted, and `wifi.sh` on the device already writes 64 hex digits as a raw
//! key. The passphrase itself never reaches the card.

use super::schema::WifiConfig;

/// PBKDF2 rounds of WPA2-Personal (IEEE 802.11i).
const ROUNDS: u32 = 4096;

/// Whether `psk` is a raw key: 64 hex digits.
pub fn is_raw_key(psk: &str) -> bool {
    psk.len() == 64 && psk.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The PMK of `passphrase` on the network `ssid`, as 64 lower-case hex digits.
pub fn wifi_pmk(ssid: &str, passphrase: &str) -> String {
    let mut pmk = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(passphrase.as_bytes(), ssid.as_bytes(), ROUNDS, &mut pmk);
    hex::encode(pmk)
}

impl WifiConfig {
    /// The key written for the device: a raw key as given (lower case), a passphrase as its
    /// PMK; `None` for an open network.
    pub fn device_psk(&self) -> Option<String> {
        let psk = self.psk.as_deref()?;
        Some(if is_raw_key(psk) {
            psk.to_ascii_lowercase()
        } else {
            wifi_pmk(&self.ssid, psk)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmk_of_the_ieee_802_11i_test_vectors() {
        // IEEE 802.11i-2004, H.4.1.
        assert_eq!(
            wifi_pmk("IEEE", "password"),
            "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
        );
        assert_eq!(
            wifi_pmk("ThisIsASSID", "ThisIsAPassword"),
            "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af"
        );
    }

    #[test]
    fn raw_keys_pass_through_and_open_networks_have_none() {
        let mut w = WifiConfig {
            ssid: "x".into(),
            psk: Some("AB".repeat(32)),
            country: None,
        };
        assert_eq!(w.device_psk().unwrap(), "ab".repeat(32));
        w.psk = None;
        assert_eq!(w.device_psk(), None);
    }
}
