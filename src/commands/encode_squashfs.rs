//! `edgeimg encode-squashfs` (hidden): the squashfs encoder alone, for `scripts/bench`.

use anyhow::Result;

use crate::cli::EncodeSquashfsArgs;
use crate::fs::squashfs_bench::{encode_dir, EncodeSquashfs};

pub(crate) fn encode(a: &EncodeSquashfsArgs) -> Result<()> {
    let report = encode_dir(&EncodeSquashfs {
        dir: a.dir.clone(),
        out: a.out.clone(),
        level: a.level,
        block_size: a.block_size,
        threads: a.threads,
    })?;
    super::print_json(&report)?;
    Ok(())
}
