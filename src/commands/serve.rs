//! `edgeimg serve`: a folder over read-only HTTP, one access line per request on stderr.

use anyhow::Result;

use super::Out;
use crate::cli::ServeArgs;

pub(crate) fn serve(out: Out, args: &ServeArgs) -> Result<()> {
    let mut server = crate::serve::Server::bind(&args.dir, &args.listen)?;
    if args.qemu_guestfwd {
        server = server.with_limits(crate::serve::Limits::qemu_guestfwd());
    }
    let addr = server.local_addr()?;
    if out.json {
        super::print_json_line(&serde_json::json!({
            "listen": addr.to_string(),
            "dir": args.dir,
        }))?;
    } else if !out.quiet {
        println!(
            "serving {} on http://{addr}/ (read-only; Ctrl-C stops)",
            args.dir.display()
        );
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let quiet = out.quiet;
    server.run(std::sync::Arc::new(
        move |r: &crate::serve::AccessRecord| {
            if !quiet {
                eprintln!("{r}");
            }
        },
    ))
}
