//! `edgeimg keys generate DIR`: the user's own Secure Boot keys (see `crate::efi::keys`);
//! `edgeimg keys fleet OUT`: the fleet's update signing key (see `crate::bundle::keys`).

use anyhow::Result;

use super::Out;
use crate::cli::KeysCommand;

pub(crate) fn keys(out: Out, cmd: &KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Generate(a) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let written = crate::efi::keys::generate(&a.dir, &a.name, now)?;
            let db = std::fs::read(a.dir.join("db.cer"))?;
            let (subject, sha256) = crate::efi::keys::describe_cert(&db)?;
            if out.json {
                return super::print_json(&serde_json::json!({
                    "dir": a.dir,
                    "files": written,
                    "db_subject": subject,
                    "db_sha256": sha256,
                }));
            }
            if !out.quiet {
                println!("wrote Secure Boot keys to {}:", a.dir.display());
                for p in &written {
                    println!("  {}", p.display());
                }
                println!("db certificate: {subject}, sha256 {sha256}");
                println!(
                    "keep the .key files secret; build with --secure-boot {}",
                    a.dir.display()
                );
            }
            Ok(())
        }
        KeysCommand::Fleet(a) => {
            let f = crate::bundle::keys::generate(&a.out)?;
            if out.json {
                return super::print_json(&serde_json::json!({
                    "key": f.key,
                    "public": f.public,
                }));
            }
            if !out.quiet {
                println!("wrote the fleet update key:");
                println!("  {} (private, keep it secret)", f.key.display());
                println!("  {}", f.public.display());
                println!(
                    "build with --signing-key {}: the image takes only bundles signed with it",
                    f.key.display()
                );
            }
            Ok(())
        }
    }
}
