//! One change the harness makes to a Raspberry Pi device tree before QEMU boots it: the SD
//! card on the SDHCI controller instead of the Pi's sdhost (`[qemu.direct] sd_on_sdhci`).
//!
//! Why: QEMU 7.2's Pi firmware mailbox does not answer `SET_SDHOST_CLOCK` (0x00038042).
//! U-Boot's sdhost driver then takes the clock the firmware "set" as 0, and its 32-bit
//! build divides by zero and hangs (its 64-bit build reads 0 and goes on). The real
//! firmware answers it. QEMU keeps the card on the SDHCI until a driver puts GPIO 48-53
//! on sdhost, and U-Boot does not, so the device tree U-Boot and the kernel get says
//! sdhost `status = "fail"` and SDHCI `status = "okay"`: the same card through the other
//! controller, which both drivers clock from the device tree's clocks.
//!
//! The flattened device tree is patched in place: a value that gets shorter is followed by
//! `FDT_NOP` tokens, so no offset in the blob moves.

use anyhow::{bail, Context, Result};

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

const SDHOST: &str = "brcm,bcm2835-sdhost";
const SDHCI: &str = "brcm,bcm2835-sdhci";

fn be(b: &[u8], at: usize) -> Result<u32> {
    let w = b
        .get(at..at + 4)
        .context("the device tree ends inside a header field or token")?;
    Ok(u32::from_be_bytes(w.try_into().unwrap()))
}

/// A node's `compatible` and where its `status` value is.
#[derive(Default)]
struct Node {
    compatible: Vec<String>,
    /// Offset of the value and its length.
    status: Option<(usize, usize)>,
}

/// The nodes of `dtb` (in order) with their first `compatible` strings and `status` value.
fn nodes(dtb: &[u8]) -> Result<Vec<Node>> {
    if be(dtb, 0)? != MAGIC {
        bail!("not a flattened device tree (no d00dfeed magic)");
    }
    let structs = be(dtb, 8)? as usize;
    let strings = be(dtb, 12)? as usize;
    let name_at = |off: u32| -> Result<&str> {
        let from = strings + off as usize;
        let rest = dtb
            .get(from..)
            .context("a property name is outside the blob")?;
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        Ok(std::str::from_utf8(&rest[..end]).unwrap_or(""))
    };
    let mut out = Vec::new();
    let mut open: Vec<Node> = Vec::new();
    let mut at = structs;
    loop {
        let token = be(dtb, at)?;
        at += 4;
        match token {
            BEGIN_NODE => {
                let rest = dtb.get(at..).context("a node name is outside the blob")?;
                let len = rest
                    .iter()
                    .position(|&c| c == 0)
                    .context("an unended node name")?;
                at += (len + 1).next_multiple_of(4);
                open.push(Node::default());
            }
            END_NODE => out.push(open.pop().context("END_NODE with no node open")?),
            PROP => {
                let len = be(dtb, at)? as usize;
                let name = name_at(be(dtb, at + 4)?)?;
                let value = at + 8;
                let bytes = dtb
                    .get(value..value + len)
                    .context("a property outside the blob")?;
                let node = open.last_mut().context("a property outside any node")?;
                match name {
                    "compatible" => {
                        node.compatible = bytes
                            .split(|&c| c == 0)
                            .filter(|s| !s.is_empty())
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect()
                    }
                    "status" => node.status = Some((value, len)),
                    _ => {}
                }
                at = value + len.next_multiple_of(4);
            }
            NOP => {}
            END => return Ok(out),
            t => bail!("unknown device tree token {t:#x} at byte {}", at - 4),
        }
    }
}

/// Sets a `status` value of `len` bytes at `value` to `to`, which must fit in its padded
/// slot; the rest of the slot becomes NOP tokens.
fn set_status(dtb: &mut [u8], (value, len): (usize, usize), to: &str) -> Result<()> {
    let slot = len.next_multiple_of(4);
    let new_len = to.len() + 1;
    let used = new_len.next_multiple_of(4);
    if used > slot {
        bail!("status {to:?} does not fit where the old value was");
    }
    dtb[value - 8..value - 4].copy_from_slice(&(new_len as u32).to_be_bytes());
    dtb[value..value + slot].fill(0);
    dtb[value..value + to.len()].copy_from_slice(to.as_bytes());
    for nop in (value + used..value + slot).step_by(4) {
        dtb[nop..nop + 4].copy_from_slice(&NOP.to_be_bytes());
    }
    Ok(())
}

/// `dtb` with the SD card on the SDHCI: every sdhost node `status = "fail"`, every SDHCI
/// node `status = "okay"`. Both nodes must carry a `status` (the Pi's device trees do).
pub fn sd_on_sdhci(dtb: &[u8]) -> Result<Vec<u8>> {
    let found = nodes(dtb)?;
    let status_of = |compat: &str| -> Result<Vec<(usize, usize)>> {
        let s: Vec<_> = found
            .iter()
            .filter(|n| n.compatible.iter().any(|c| c == compat))
            .map(|n| {
                n.status
                    .with_context(|| format!("the {compat} node has no status"))
            })
            .collect::<Result<_>>()?;
        if s.is_empty() {
            bail!("the device tree has no {compat} node");
        }
        Ok(s)
    };
    let (host, hci) = (status_of(SDHOST)?, status_of(SDHCI)?);
    let mut out = dtb.to_vec();
    for s in host {
        set_status(&mut out, s, "fail")?;
    }
    for s in hci {
        set_status(&mut out, s, "okay")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device tree compiled by `dtc` from `source` (device-tree-compiler is a test
    /// dependency): the patch is judged by the tool's own reader, `fdtget`.
    fn compile(source: &str, dir: &std::path::Path) -> std::path::PathBuf {
        let src = dir.join("t.dts");
        std::fs::write(&src, source).unwrap();
        let out = dir.join("t.dtb");
        let o = std::process::Command::new("dtc")
            .args(["-I", "dts", "-O", "dtb", "-o"])
            .arg(&out)
            .arg(&src)
            .output()
            .expect("dtc (device-tree-compiler)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    }

    fn fdtget(dtb: &std::path::Path, node: &str, prop: &str) -> String {
        let o = std::process::Command::new("fdtget")
            .arg(dtb)
            .args([node, prop])
            .output()
            .expect("fdtget (device-tree-compiler)");
        assert!(
            o.status.success(),
            "fdtget {node} {prop}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    const PI2: &str = r#"/dts-v1/;
/ {
    compatible = "raspberrypi,2-model-b", "brcm,bcm2836";
    soc {
        mmc@7e202000 { compatible = "brcm,bcm2835-sdhost"; status = "okay"; bus-width = <4>; };
        mmc@7e300000 { compatible = "brcm,bcm2835-sdhci"; status = "disabled"; after = <7>; };
        serial@7e201000 { compatible = "arm,pl011", "arm,primecell"; status = "okay"; };
    };
};
"#;

    #[test]
    fn the_card_moves_to_the_sdhci_and_dtc_reads_the_rest_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let dtb = compile(PI2, dir.path());
        let patched = sd_on_sdhci(&std::fs::read(&dtb).unwrap()).unwrap();
        let to = dir.path().join("p.dtb");
        std::fs::write(&to, &patched).unwrap();
        assert_eq!(fdtget(&to, "/soc/mmc@7e202000", "status"), "fail");
        assert_eq!(fdtget(&to, "/soc/mmc@7e300000", "status"), "okay");
        // The properties after a shortened value still read (the NOP padding).
        assert_eq!(fdtget(&to, "/soc/mmc@7e300000", "after"), "7");
        assert_eq!(fdtget(&to, "/soc/mmc@7e202000", "bus-width"), "4");
        assert_eq!(fdtget(&to, "/soc/serial@7e201000", "status"), "okay");
        assert_eq!(patched.len(), std::fs::read(&dtb).unwrap().len());
    }

    #[test]
    fn a_tree_without_the_controllers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dtb = compile("/dts-v1/;\n/ { soc { }; };\n", dir.path());
        let err = sd_on_sdhci(&std::fs::read(&dtb).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no brcm,bcm2835-sdhost node"), "{err}");
        assert!(sd_on_sdhci(b"not a tree at all").is_err());
    }
}
