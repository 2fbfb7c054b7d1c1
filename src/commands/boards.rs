//! `edgeimg boards`: the boards, with architecture, boot method and partition table.

use anyhow::Result;

use super::Out;
use crate::profile::DataDir;

pub(crate) fn boards(out: Out, data: &DataDir) -> Result<()> {
    let boards = data.boards()?;
    if out.json {
        return super::print_json(&boards);
    }
    println!(
        "{:<12} {:<6} {:<6} {:<5} description",
        "board", "arch", "boot", "table"
    );
    for b in &boards {
        let boot = crate::boot::method(b).name();
        let table = format!("{:?}", b.partition_table).to_lowercase();
        let desc = match &b.unsupported {
            Some(why) => format!("NOT OFFERED: {why}"),
            None => b.description.clone(),
        };
        println!(
            "{:<12} {:<6} {:<6} {:<5} {desc}",
            b.name,
            b.arch.debian(),
            boot,
            table
        );
    }
    Ok(())
}
