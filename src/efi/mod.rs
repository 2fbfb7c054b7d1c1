//! UEFI formats edgeimg writes itself: PE images (Unified Kernel Images from systemd-stub,
//! Authenticode signatures), the user's Secure Boot keys and the signed EFI signature lists
//! that enroll them. Nothing here runs `sbsign`, `ukify` or `openssl`; tests judge the output
//! with `sbverify`, `objdump` and OVMF.

pub mod der;
pub mod keys;
pub mod pe;
pub mod sign;

#[cfg(test)]
mod tests;
