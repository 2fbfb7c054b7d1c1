//! One handler per command: the only place that prints, prompts or reads `--json`/`--quiet`.
//! Each handler turns the clap arguments of `cli` into plain values, calls the library, and
//! prints the result: text on stdout, or one JSON object with `--json`; progress and warnings
//! go to stderr through the [`console::Console`] reporter.

mod boards;
mod build;
mod cluster;
mod configure;
mod console;
mod encode_squashfs;
mod flash;
mod inspect;
mod keys;
mod manual;
mod node_args;
mod serve;
mod smoke;
mod update;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::profile::DataDir;
use crate::progress::{Reporter, Silent};

/// Parses arguments, runs the command and prints the outcome. Returns the exit code.
pub fn main() -> i32 {
    // First, before any thread starts: SIGINT, SIGTERM and SIGHUP remove scratch files.
    crate::util::cleanup::install();
    let cli = Cli::parse();
    let rep: Box<dyn Reporter> = if cli.quiet || cli.json {
        Box::new(Silent)
    } else {
        Box::new(console::Console::new())
    };
    match run(&cli, rep.as_ref()) {
        Ok(()) => 0,
        Err(e) => {
            // Messages quote user input: whatever a check let through is escaped here.
            let message = format!("{e:#}");
            if cli.json {
                // On one line, as it always was (`error.schema.json`).
                let _ = print_json_line(&serde_json::json!({ "error": message }));
            }
            eprintln!("error: {}", crate::util::text::for_terminal(&message));
            1
        }
    }
}

/// The version of every `--json` output's shape (and of `build --dry-run`'s plan): a
/// `"format_version": 1` key in each object printed (first where a struct is printed). The shapes are described by the JSON
/// Schemas in `src/manifest/schema/`, which the tests check real outputs against; a change
/// that removes or retypes a field raises this number.
pub const FORMAT_VERSION: u32 = 1;

/// `value`'s fields after `format_version`.
#[derive(serde::Serialize)]
struct Versioned<'a, T: serde::Serialize> {
    format_version: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// Prints `value` (a struct or map) as pretty JSON after `"format_version"`, with the
/// characters a terminal would act on escaped (JSON writers leave DEL, C1 controls and
/// bidirectional marks as they are). Every command's `--json` output goes through here.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(&Versioned {
        format_version: FORMAT_VERSION,
        body: value,
    })?;
    println!("{}", crate::util::text::json_for_terminal(json));
    Ok(())
}

/// [`print_json`] on one line, for an output read line by line (`serve`'s listening line,
/// `smoke`'s and `flash`'s device list, as they always were).
pub(crate) fn print_json_line<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", json_line(value)?);
    Ok(())
}

/// `value` after `"format_version"` as one line of JSON, escaped as [`print_json`] does.
pub(crate) fn json_line<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    let json = serde_json::to_string(&Versioned {
        format_version: FORMAT_VERSION,
        body: value,
    })?;
    Ok(crate::util::text::json_for_terminal(json))
}

/// How a handler prints: `--json`, `--quiet`, or text.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    pub json: bool,
    pub quiet: bool,
}

fn run(cli: &Cli, rep: &dyn Reporter) -> anyhow::Result<()> {
    let out = Out {
        json: cli.json,
        quiet: cli.quiet,
    };
    // Commands that need no project data.
    match &cli.command {
        Command::Serve(args) => return serve::serve(out, args),
        Command::Keys(k) => return keys::keys(out, k),
        Command::EncodeSquashfs(args) => return encode_squashfs::encode(args),
        Command::Configure(a) => return configure::configure(out, a, rep),
        Command::Inspect(a) => return inspect::inspect(out, a),
        Command::Flash(a) => return flash::flash(out, a, rep),
        Command::Update(a) => return update::update(out, a),
        Command::Cluster(c) => return cluster::cluster(out, c, cli.data_dir.as_deref()),
        Command::Completions(a) => return manual::completions(a.shell),
        Command::Manpages(a) => return manual::manpages(out, &a.dir),
        _ => {}
    }
    let data = DataDir::locate(cli.data_dir.as_deref())?;
    match &cli.command {
        Command::Boards => boards::boards(out, &data),
        Command::Build(args) => build::build(out, &data, args, rep),
        Command::Smoke(args) => smoke::smoke(out, &data, args, rep),
        Command::Run(args) => smoke::run(&data, args),
        Command::Serve(_)
        | Command::Keys(_)
        | Command::EncodeSquashfs(_)
        | Command::Configure(_)
        | Command::Inspect(_)
        | Command::Flash(_)
        | Command::Update(_)
        | Command::Cluster(_)
        | Command::Completions(_)
        | Command::Manpages(_) => unreachable!("handled above"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::process::Command;

    use crate::util::test_tools::run_with_stdin;

    /// What python3's `jsonschema` finds wrong in `json` against
    /// `src/manifest/schema/<schema>` (the schema itself checked first), one line each.
    pub(crate) fn schema_errors(schema: &str, json: &str) -> Vec<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/manifest/schema")
            .join(schema);
        let script = "import json, sys\n\
            import jsonschema\n\
            schema = json.load(open(sys.argv[1]))\n\
            cls = jsonschema.validators.validator_for(schema)\n\
            cls.check_schema(schema)\n\
            for e in cls(schema).iter_errors(json.load(sys.stdin)):\n    \
            print('/'.join(map(str, e.path)) + ': ' + e.message)\n";
        let o = run_with_stdin(
            Command::new("python3").args(["-c", script]).arg(&path),
            json.as_bytes(),
        );
        assert!(
            o.status.success(),
            "python3 jsonschema on {schema}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Panics unless `json` validates against `src/manifest/schema/<schema>`.
    pub(crate) fn check_schema(schema: &str, json: &str) {
        let errors = schema_errors(schema, json);
        assert!(
            errors.is_empty(),
            "{json}\ndoes not validate against {schema}:\n{}",
            errors.join("\n")
        );
    }

    /// Every command that prints JSON, and the schema its output has (`--json` outputs,
    /// `encode-squashfs`'s report, and the error any command prints under `--json`).
    const SCHEMAS: &[(&str, &str)] = &[
        ("boards", "boards.schema.json"),
        ("build", "build-report.schema.json"),
        ("build --dry-run", "plan.schema.json"),
        ("cluster init|status|revoke|k0sctl", "cluster.schema.json"),
        ("configure", "configure-report.schema.json"),
        ("encode-squashfs", "encode-squashfs.schema.json"),
        ("flash", "flash.schema.json"),
        ("inspect", "inspect.schema.json"),
        ("manpages", "manpages.schema.json"),
        ("serve", "serve.schema.json"),
        ("smoke", "smoke.schema.json"),
        ("update", "update.schema.json"),
        ("any command failing", "error.schema.json"),
    ];

    /// The handlers' sources: a JSON print outside [`super::print_json`] and
    /// [`super::print_json_line`] could leave `format_version` out.
    const HANDLERS: &[(&str, &str)] = &[
        ("boards.rs", include_str!("boards.rs")),
        ("build.rs", include_str!("build.rs")),
        ("cluster.rs", include_str!("cluster.rs")),
        ("configure.rs", include_str!("configure.rs")),
        ("console.rs", include_str!("console.rs")),
        ("encode_squashfs.rs", include_str!("encode_squashfs.rs")),
        ("flash.rs", include_str!("flash.rs")),
        ("inspect.rs", include_str!("inspect.rs")),
        ("keys.rs", include_str!("keys.rs")),
        ("manual.rs", include_str!("manual.rs")),
        ("node_args.rs", include_str!("node_args.rs")),
        ("serve.rs", include_str!("serve.rs")),
        ("smoke.rs", include_str!("smoke.rs")),
        ("update.rs", include_str!("update.rs")),
        ("mod.rs", include_str!("mod.rs")),
    ];

    #[test]
    fn every_json_output_goes_through_the_versioned_printers() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/commands");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".rs"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = HANDLERS.iter().map(|(n, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "a handler file is missing from HANDLERS");
        for (name, text) in HANDLERS {
            // This module's tests and the printers themselves are the exceptions.
            let code = match *name {
                "mod.rs" => text.split("#[cfg(test)]").next().unwrap(),
                _ => text,
            };
            let squeezed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
            let printers = squeezed.matches("serde_json::to_string").count();
            let allowed = if *name == "mod.rs" { 2 } else { 0 };
            assert_eq!(
                printers, allowed,
                "{name}: JSON written outside print_json/print_json_line"
            );
            assert!(
                !squeezed.contains("println!(\"{}\",serde_json")
                    && !squeezed.contains("println!(\"{json}\"")
                    && !squeezed.contains("json!({\"format_version\""),
                "{name}: a JSON object printed without the versioned printers"
            );
        }
    }

    /// flash.schema.json repeats configure-report.schema.json's object (flash --node prints
    /// what configure did) without format_version: the two must not drift apart.
    #[test]
    fn flash_schema_embeds_the_configure_report_as_it_is() {
        let read = |name: &str| -> serde_json::Value {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/manifest/schema")
                .join(name);
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let report = read("configure-report.schema.json");
        let flash = read("flash.schema.json");
        let embedded = &flash["$defs"]["configured"];
        let mut props = report["properties"].as_object().unwrap().clone();
        props.remove("format_version");
        assert_eq!(
            embedded["properties"].as_object().unwrap(),
            &props,
            "flash.schema.json's configured.properties"
        );
        let required: Vec<&serde_json::Value> = report["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| *r != "format_version")
            .collect();
        let embedded_required: Vec<&serde_json::Value> =
            embedded["required"].as_array().unwrap().iter().collect();
        assert_eq!(embedded_required, required, "configured.required");
        assert_eq!(embedded["additionalProperties"], false);
    }

    #[test]
    fn the_versioned_printers_put_format_version_first() {
        #[derive(serde::Serialize)]
        struct S {
            a: u32,
            b: &'static str,
        }
        let line = super::json_line(&S { a: 1, b: "x\u{7f}" }).unwrap();
        assert_eq!(line, "{\"format_version\":1,\"a\":1,\"b\":\"x\\u007f\"}");
        let map = super::json_line(&serde_json::json!({ "error": "no" })).unwrap();
        assert_eq!(map, "{\"format_version\":1,\"error\":\"no\"}");
        check_schema("error.schema.json", &map);
        assert_eq!(super::FORMAT_VERSION, 1, "the schemas say \"const\": 1");
    }

    #[test]
    fn every_json_output_has_a_schema_and_every_schema_is_listed() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/manifest/schema");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut named: Vec<&str> = SCHEMAS.iter().map(|(_, s)| *s).collect();
        named.push("manifest.schema.json");
        named.sort();
        assert_eq!(files, named);
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .unwrap();
        for f in &files {
            let schema: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
            assert_eq!(
                schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{f}"
            );
            let stem = f.trim_end_matches(".schema.json");
            assert!(
                readme.contains(&format!("`{stem}`")),
                "README.md does not list {f}"
            );
            // Strict: every object's keys are closed and format_version is required.
            if f != "manifest.schema.json" {
                let top = schema.get("oneOf").and_then(|o| o.as_array()).cloned();
                for obj in top.unwrap_or_else(|| vec![schema.clone()]) {
                    assert_eq!(obj["additionalProperties"], false, "{f}");
                    assert!(
                        obj["required"]
                            .as_array()
                            .unwrap()
                            .contains(&"format_version".into()),
                        "{f}"
                    );
                    assert_eq!(
                        obj["properties"]["format_version"]["const"],
                        super::FORMAT_VERSION,
                        "{f}"
                    );
                }
            }
        }
        // The checker refuses what a schema forbids: an extra key, a missing format_version.
        assert!(!schema_errors(
            "serve.schema.json",
            r#"{"format_version":1,"listen":"127.0.0.1:8080","dir":"d","x":1}"#
        )
        .is_empty());
        assert!(!schema_errors(
            "serve.schema.json",
            r#"{"listen":"127.0.0.1:8080","dir":"d"}"#
        )
        .is_empty());
    }
}
