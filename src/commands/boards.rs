//! `edgeimg boards`: the boards, built in and the user's, with architecture, boot method and
//! partition table; those not offered say why. `--json` prints the same rows.

use anyhow::Result;
use serde::Serialize;

use super::Out;
use crate::profile::{DataDir, Origin};

/// One board as `boards` shows it (the `--json` shape: src/manifest/schema/boards.schema.json).
#[derive(Serialize)]
struct Row {
    name: String,
    /// Debian architecture (`amd64`, `arm64`, `armhf`).
    arch: String,
    /// Boot method (`uefi`, `rpi`).
    boot: String,
    /// `gpt` or `mbr`.
    partition_table: String,
    description: String,
    /// False when the board is listed but cannot be built; `not_offered_because` says why.
    offered: bool,
    not_offered_because: Option<String>,
    /// `{"kind": "built_in"}` or `{"kind": "file", "path": ...}`.
    origin: Origin,
}

pub(crate) fn boards(out: Out, data: &DataDir) -> Result<()> {
    let rows: Vec<Row> = data
        .boards()?
        .into_iter()
        .map(|b| {
            let boot = crate::boot::method(&b).name().to_string();
            Row {
                boot,
                partition_table: format!("{:?}", b.partition_table).to_lowercase(),
                arch: b.arch.debian().to_string(),
                offered: b.unsupported.is_none(),
                origin: data.board_origin(&b.name).unwrap_or(Origin::BuiltIn),
                not_offered_because: b.unsupported,
                description: b.description,
                name: b.name,
            }
        })
        .collect();
    if out.json {
        return super::print_json(&serde_json::json!({ "boards": rows }));
    }
    println!(
        "{:<12} {:<6} {:<6} {:<5} description",
        "board", "arch", "boot", "table"
    );
    for r in &rows {
        let mut desc = match &r.not_offered_because {
            Some(why) => format!("NOT OFFERED: {why}"),
            None => r.description.clone(),
        };
        if let Origin::File(p) = &r.origin {
            desc.push_str(&format!(" (from {})", p.display()));
        }
        println!(
            "{:<12} {:<6} {:<6} {:<5} {}",
            r.name,
            r.arch,
            r.boot,
            r.partition_table,
            crate::util::text::for_terminal(&desc)
        );
    }
    Ok(())
}
