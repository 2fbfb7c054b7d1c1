//! An installed edgeimg needs no source tree: `cargo install` from a copy of the project, the
//! copy removed, then a build from an empty folder with the data built into the binary. The
//! image is the same, byte for byte, as one the test binary builds from a `--data-dir` copy
//! of the same data (made with other modes): where the data comes from changes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// What `cargo install` needs of the project (its tests are not built).
const PROJECT: [&str; 7] = [
    "Cargo.toml",
    "Cargo.lock",
    "build.rs",
    "src",
    "boards",
    "profiles",
    "overlays",
];

fn cp(args: &[&str]) {
    let o = run_tool("cp", args);
    assert!(o.status.success(), "cp {args:?}: {}", stderr(&o));
}

/// A target folder of its own for `cargo install` (the test's own is locked by `cargo test`
/// while it runs), kept between runs under target/tmp and first seeded with hard links to the
/// dependencies `cargo test` already compiled, so that only edgeimg itself is compiled.
fn install_target() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("install-target");
    let debug = target.join("debug");
    if !debug.exists() {
        let own = Path::new(env!("CARGO_BIN_EXE_edgeimg")).parent().unwrap();
        let seeding = target.join("debug.seeding");
        let _ = std::fs::remove_dir_all(&seeding);
        std::fs::create_dir_all(&seeding).unwrap();
        for sub in ["deps", "build", ".fingerprint"] {
            if own.join(sub).is_dir() {
                cp(&[
                    "-al",
                    own.join(sub).to_str().unwrap(),
                    seeding.to_str().unwrap(),
                ]);
            }
        }
        std::fs::rename(&seeding, &debug).unwrap();
    }
    target
}

/// `edgeimg build` with `bin`, in `cwd`, with the shared cache and the k0s stand-in, and a
/// home with no user boards or profiles.
fn build_with(bin: &Path, cwd: &Path, home: &Path, out: &str, extra: &[&str]) -> Vec<u8> {
    let cache = cache_dir();
    let mut args: Vec<String> = [
        "build",
        "--out",
        out,
        "--cache-dir",
        cache.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(k0s_args());
    args.extend(["--no-xz", "--role", "worker"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = Command::new(bin)
        .args(&args)
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("EDGEIMG_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{} build failed:\n{}",
        bin.display(),
        stderr(&o)
    );
    o.stdout
}

#[test]
fn an_installed_binary_builds_from_an_empty_folder_after_the_clone_is_gone() {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    let clone = tmp.path().join("clone");
    std::fs::create_dir(&clone).unwrap();
    for f in PROJECT {
        cp(&[
            "-a",
            project.join(f).to_str().unwrap(),
            clone.to_str().unwrap(),
        ]);
    }
    let root = tmp.path().join("root");
    let o = Command::new("cargo")
        .args(["install", "--offline", "--locked", "--debug", "--path"])
        .arg(&clone)
        .arg("--root")
        .arg(&root)
        .env("CARGO_TARGET_DIR", install_target())
        .output()
        .unwrap();
    assert!(o.status.success(), "cargo install:\n{}", stderr(&o));
    let installed = root.join("bin/edgeimg");
    assert!(installed.is_file(), "{} missing", installed.display());
    eprintln!(
        "cargo install took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // The clone goes away: nothing of it may be needed any more.
    std::fs::remove_dir_all(&clone).unwrap();

    let empty = tmp.path().join("empty");
    let home = tmp.path().join("home");
    std::fs::create_dir(&empty).unwrap();
    std::fs::create_dir(&home).unwrap();
    let boards = Command::new(&installed)
        .args(["boards", "--json"])
        .current_dir(&empty)
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("EDGEIMG_DATA_DIR")
        .output()
        .unwrap();
    assert!(boards.status.success(), "{}", stderr(&boards));
    let list: serde_json::Value = serde_json::from_slice(&boards.stdout).unwrap();
    let x86 = list["boards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "x86-64")
        .expect("x86-64 is built in");
    assert_eq!(x86["origin"]["kind"], "built_in");
    check_json("boards.schema.json", &boards.stdout);

    let report = build_with(&installed, &empty, &home, "out", &["--json"]);
    check_json("build-report.schema.json", &report);
    let img = empty.join("out/x86-64-worker.img");
    assert_published_modes(&empty.join("out"));
    check_json(
        "manifest.schema.json",
        &std::fs::read(empty.join("out/manifest.json")).unwrap(),
    );
    let inspect = Command::new(&installed)
        .args(["inspect", "--json"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    check_json("inspect.schema.json", &inspect.stdout);
    let i: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    check_json("manifest.schema.json", i["manifest"].to_string().as_bytes());
    // configure --json on a copy of the image.
    let copy = tmp.path().join("copy.img");
    sparse_copy(&img, &copy);
    let configure = Command::new(&installed)
        .args(["configure", "--json", "--hostname", "installed-1"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(configure.status.success(), "{}", stderr(&configure));
    check_json("configure-report.schema.json", &configure.stdout);
    assert!(img.is_file(), "no image in the empty folder");
    let o = run_tool("sfdisk", &["--json", img.to_str().unwrap()]);
    assert!(o.status.success(), "sfdisk: {}", stderr(&o));
    // Nothing but the outputs was written there: no data folder, no stray files.
    let names: Vec<String> = std::fs::read_dir(&empty)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["out"]);

    // The same data from a --data-dir, its files group-writable as another umask leaves them.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for f in ["boards", "profiles", "overlays"] {
        cp(&[
            "-r",
            project.join(f).to_str().unwrap(),
            data.to_str().unwrap(),
        ]);
    }
    let o = run_tool("chmod", &["-R", "g+w", data.to_str().unwrap()]);
    assert!(o.status.success());
    let from_dir = tmp.path().join("from-dir");
    build_with(
        &bin(),
        tmp.path(),
        &home,
        from_dir.to_str().unwrap(),
        &["--data-dir", data.to_str().unwrap()],
    );
    let manifest = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
    };
    let (a, b) = (manifest(&empty.join("out")), manifest(&from_dir));
    assert_eq!(a["plan_hash"], b["plan_hash"]);
    assert_eq!(a["image_hash"], b["image_hash"]);
    let o = run_tool(
        "cmp",
        &[
            img.to_str().unwrap(),
            from_dir.join("x86-64-worker.img").to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "the image differs with the data from --data-dir: {}",
        stdout(&o)
    );
    eprintln!("whole test took {:.0} s", started.elapsed().as_secs_f64());
}

#[test]
fn bash_completion_loads_and_knows_the_commands() {
    let o = edgeimg(&["completions", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("edgeimg.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let syntax = run_tool("bash", &["-n", script.to_str().unwrap()]);
    assert!(syntax.status.success(), "bash -n: {}", stderr(&syntax));
    // Loaded into bash, it registers a completion for edgeimg that offers the commands.
    let probe = format!(
        "source {}; complete -p edgeimg; COMP_WORDS=(edgeimg bu); COMP_CWORD=1; \
         COMP_LINE='edgeimg bu'; COMP_POINT=10; _edgeimg edgeimg bu edgeimg; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"; COMP_WORDS=(edgeimg build --bo); COMP_CWORD=2; \
         _edgeimg edgeimg --bo build; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let loaded = run_tool("bash", &["-c", &probe]);
    let out = stdout(&loaded);
    assert!(loaded.status.success(), "{}{out}", stderr(&loaded));
    assert!(out.contains("-F _edgeimg edgeimg"), "{out}");
    assert!(
        out.lines().any(|l| l == "build"),
        "no `build` offered:\n{out}"
    );
    assert!(
        out.lines().any(|l| l == "--board"),
        "no `--board` offered:\n{out}"
    );
    let text = String::from_utf8_lossy(&o.stdout);
    for cmd in [
        "boards",
        "configure",
        "flash",
        "inspect",
        "serve",
        "completions",
        "manpages",
    ] {
        assert!(text.contains(cmd), "bash completion lacks {cmd}");
    }
    for shell in ["zsh", "fish"] {
        let o = edgeimg(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("edgeimg") && text.contains("configure"),
            "{shell}: {text}"
        );
    }
}

/// Text of a page as man prints it to a pipe: grotty's overstrikes (`X\bX` bold, `_\bX`
/// underline) taken out.
fn plain(text: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{8}') {
            chars.next();
            continue;
        }
        out.push(c);
    }
    out.into_iter().collect()
}

#[test]
fn man_pages_render_with_man_and_groff() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let o = edgeimg(&["manpages", pages.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_json("manpages.schema.json", &o.stdout);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(listed["pages"].as_array().unwrap().len() >= 9, "{listed}");
    let build = pages.join("edgeimg-build.1");
    let main = pages.join("edgeimg.1");
    assert!(
        !pages.join("edgeimg-encode-squashfs.1").exists(),
        "a hidden command got a page"
    );
    // groff, warnings on: the page is valid man(7) and says what `--help` says.
    let g = run_tool(
        "groff",
        &["-man", "-Tutf8", "-ww", "-z", build.to_str().unwrap()],
    );
    assert!(
        g.status.success() && g.stderr.is_empty(),
        "groff: {}",
        stderr(&g)
    );
    let m = std::process::Command::new("man")
        .args(["-l", "-Tutf8"])
        .arg(&build)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("running man");
    let text = plain(&stdout(&m));
    assert!(m.status.success(), "man -l: {}", stderr(&m));
    for want in ["edgeimg-build", "--board", "--k0s-binary", "--data-dir"] {
        assert!(
            text.contains(want),
            "man edgeimg-build lacks {want}:\n{text}"
        );
    }
    let m = std::process::Command::new("man")
        .args(["-l", "-Tutf8"])
        .arg(&main)
        .env("MANPAGER", "cat")
        .output()
        .expect("running man");
    let text = plain(&stdout(&m));
    for want in ["SUBCOMMANDS", "build", "configure", "completions"] {
        assert!(text.contains(want), "man edgeimg lacks {want}:\n{text}");
    }
}

#[test]
fn json_outputs_without_a_build_match_their_schemas() {
    // Every built-in board is offered now; a user's board marked `unsupported` shows the
    // other case (a board listed, not offered, and why).
    let xdg = tempfile::tempdir().unwrap();
    let boards_dir = xdg.path().join("edgeimg/boards");
    std::fs::create_dir_all(&boards_dir).unwrap();
    let pi4 =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/pi4.toml"))
            .unwrap()
            .replace(
                "name = \"pi4\"",
                "name = \"pi9\"\nunsupported = \"no such board yet\"",
            );
    assert!(
        pi4.contains("pi9"),
        "boards/pi4.toml has no name line to replace"
    );
    std::fs::write(boards_dir.join("pi9.toml"), pi4).unwrap();
    let o = Command::new(bin())
        .args(["boards", "--json"])
        .env("XDG_CONFIG_HOME", xdg.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    check_json("boards.schema.json", &o.stdout);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let boards = v["boards"].as_array().unwrap();
    // What `boards --help` says: the boards, with those not offered and why.
    let help = stdout(&edgeimg(&["boards", "--help"]));
    assert!(help.contains("not offered yet and why"), "{help}");
    assert!(boards.iter().any(|b| b["offered"] == true));
    assert!(boards
        .iter()
        .any(|b| b["offered"] == false && b["not_offered_because"].is_string()));

    let o = edgeimg(&[
        "build",
        "--dry-run",
        "--board",
        "pi4",
        "--role",
        "controller",
        "--mirror",
        "http://127.0.0.1:9/debian",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_json("plan.schema.json", &o.stdout);

    let o = edgeimg(&["build", "--board", "pi9", "--json"]);
    assert!(!o.status.success());
    check_json("error.schema.json", &o.stdout);
    assert!(stdout(&o).contains("unknown board 'pi9'"));
}

/// `serve --json`'s listening line (read as a client would: one line, then the address
/// used) and the hidden `encode-squashfs`'s report (its image read back by unsquashfs).
#[test]
fn serve_and_encode_squashfs_print_what_their_schemas_say() {
    use std::io::{BufRead, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), "n1\n").unwrap();
    std::fs::write(tree.join("hello.txt"), "hello over http\n").unwrap();

    /// The server, stopped however the test ends.
    struct Stopped(std::process::Child);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Stopped(
        Command::new(bin())
            .args([
                "serve",
                tree.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    check_json("serve.schema.json", line.as_bytes());
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["dir"], tree.to_str().unwrap(), "{v}");
    let addr = v["listen"].as_str().unwrap();
    assert!(!addr.ends_with(":0"), "{addr}");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut served = String::new();
    c.read_to_string(&mut served).unwrap();
    drop(server);
    assert!(
        served.starts_with("HTTP/1.1 200") && served.ends_with("hello over http\n"),
        "{served}"
    );

    need("unsquashfs");
    let img = dir.path().join("root.sqfs");
    let o = edgeimg(&[
        "encode-squashfs",
        tree.to_str().unwrap(),
        "--out",
        img.to_str().unwrap(),
        "--threads",
        "1",
        "--level",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_json("encode-squashfs.schema.json", &o.stdout);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["bytes"], std::fs::metadata(&img).unwrap().len(), "{r}");
    assert_eq!(r["threads"], 1, "{r}");
    let l = run_tool("unsquashfs", &["-l", "-d", "", img.to_str().unwrap()]);
    assert!(l.status.success(), "unsquashfs: {}", stderr(&l));
    let listed = stdout(&l);
    assert!(
        listed.lines().any(|p| p == "/etc/hostname") && listed.lines().any(|p| p == "/hello.txt"),
        "{listed}"
    );
}
