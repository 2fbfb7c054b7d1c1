//! The secrets of a rendered node config, hidden for display: what `inspect` prints of
//! node.env and node.toml names each secret as present or absent and never shows its value.
//! The join token lives in a file of its own (`token`), never in node.env or node.toml.

use std::collections::BTreeMap;

use super::contract::SECRET_ENV_VARS;

/// What a secret's value is shown as.
pub const PRESENT: &str = "(present, not shown)";

/// Secret keys of node.toml, as (table, key).
pub const SECRET_TOML_KEYS: &[(&str, &str)] = &[("wifi", "psk")];

/// node.env's variables with each secret's value replaced by [`PRESENT`] (an empty value,
/// meaning absent, stays empty).
pub fn hide_in_env(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    env.iter()
        .map(|(k, v)| {
            let v = if SECRET_ENV_VARS.contains(&k.as_str()) && !v.is_empty() {
                PRESENT.to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// node.toml text with each secret's value replaced by [`PRESENT`]. The text is parsed (a
/// secret may be written as a table key, a dotted key or in an inline table) and written
/// again, so comments and layout are not kept; text that does not parse is not shown at all,
/// as it could hold a secret where it cannot be found.
pub fn hide_in_toml(text: &str) -> String {
    let Ok(mut t) = text.parse::<toml::Table>() else {
        return "# (node.toml does not parse as TOML: not shown, since it may hold a secret)\n"
            .into();
    };
    for (table, key) in SECRET_TOML_KEYS {
        if let Some(toml::Value::Table(sub)) = t.get_mut(*table) {
            if let Some(v) = sub.get_mut(*key) {
                *v = toml::Value::String(PRESENT.into());
            }
        }
    }
    match toml::to_string(&t) {
        Ok(body) => format!("# node.toml; secrets are shown as present or absent\n{body}"),
        Err(_) => "# (node.toml could not be written back: not shown)\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_however_they_are_written() {
        for text in [
            "[wifi]\nssid = \"n\"\npsk = \"s3cret-pass\"\n",
            "wifi.ssid = \"n\"\nwifi.psk = \"s3cret-pass\"\n",
            "wifi = { ssid = \"n\", psk = 's3cret-pass' }\n",
        ] {
            let shown = hide_in_toml(text);
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains(&format!("psk = \"{PRESENT}\"")), "{shown}");
            assert!(shown.contains("ssid = \"n\""), "{shown}");
        }
        let shown = hide_in_toml("[wifi]\nssid = \"n\"\n");
        assert!(!shown.contains("psk"), "{shown}");
        let broken = hide_in_toml("[wifi\npsk = \"s3cret-pass\"\n");
        assert!(!broken.contains("s3cret"), "{broken}");
    }

    #[test]
    fn secret_variables_show_as_present_or_absent() {
        let env: BTreeMap<String, String> =
            [("WIFI_PSK", "ab".repeat(32)), ("WIFI_SSID", "n".into())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        for v in SECRET_ENV_VARS {
            assert!(super::super::contract::NODE_ENV_VARS.contains(v), "{v}");
        }
        let shown = hide_in_env(&env);
        assert_eq!(shown["WIFI_PSK"], PRESENT);
        assert_eq!(shown["WIFI_SSID"], "n");
        let mut absent = env.clone();
        absent.insert("WIFI_PSK".into(), String::new());
        assert_eq!(hide_in_env(&absent)["WIFI_PSK"], "");
    }
}
