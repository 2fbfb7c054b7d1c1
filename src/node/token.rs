//! The shape of a k0s join token, checked on the host: `k0s token create` prints the base64
//! of a gzip'd kubeconfig, one line. A token of another shape (a byte order mark an editor
//! added, a wrapped line, a file of something else) would only fail on the device, where the
//! worker cannot join and nobody reads why. Messages say what is wrong and never show the
//! token or any part of it.

use std::io::Read;

use super::check::base64_decode;

/// Most bytes a token may inflate to (a kubeconfig with a CA certificate is about 2 KiB).
const MAX_INFLATED: u64 = 1024 * 1024;

const HOW: &str =
    "a k0s join token is one line of base64, as `k0s token create --role worker` prints it";

fn is_base64(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')
}

/// The token in `raw` (a token file's bytes), without the surrounding whitespace, or what is
/// wrong with it.
pub fn check(raw: &[u8]) -> Result<String, String> {
    if raw.starts_with(b"\xef\xbb\xbf") {
        return Err(
            "starts with a UTF-8 byte order mark (bytes EF BB BF, added by some editors), which \
             is not part of a token: save the file without it"
                .into(),
        );
    }
    let text = std::str::from_utf8(raw)
        .map_err(|e| format!("is not text (byte {} is not UTF-8): {HOW}", e.valid_up_to()))?;
    let token = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if token.is_empty() {
        return Err("is empty: create a token with `k0s token create --role worker`".into());
    }
    if let Some(i) = token.find(char::is_whitespace) {
        return Err(format!(
            "has whitespace inside the token (at byte {i}): {HOW}; a wrapped token must be \
             joined into one line"
        ));
    }
    if let Some(i) = token.find(char::is_control) {
        return Err(format!(
            "has a control character inside the token (at byte {i}): {HOW}"
        ));
    }
    if let Some(i) = token.find(|c: char| !is_base64(c)) {
        return Err(format!(
            "is not base64 (byte {i} is not a base64 character): {HOW}"
        ));
    }
    let gzip = base64_decode(token).ok_or_else(|| {
        format!("is not base64 (its length or padding is wrong: truncated?): {HOW}")
    })?;
    if !gzip.starts_with(&[0x1f, 0x8b]) {
        return Err(format!(
            "is base64, but not gzip data (a k0s join token is a gzip'd kubeconfig): is it the right file? {HOW}"
        ));
    }
    let mut kubeconfig = Vec::new();
    flate2::read::GzDecoder::new(gzip.as_slice())
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut kubeconfig)
        .map_err(|_| {
            "holds gzip data that is truncated or corrupt: copy the whole token again".to_string()
        })?;
    if kubeconfig.len() as u64 > MAX_INFLATED {
        return Err(format!(
            "inflates to more than {MAX_INFLATED} bytes: not a k0s join token"
        ));
    }
    let has_server = std::str::from_utf8(&kubeconfig)
        .is_ok_and(|t| t.lines().any(|l| l.trim_start().starts_with("server:")));
    if !has_server {
        return Err(format!(
            "holds gzip data, but not a kubeconfig naming a `server:` (not a k0s join token): {HOW}"
        ));
    }
    Ok(token.to_string())
}
