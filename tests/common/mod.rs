//! Shared helpers of the integration tests: the edgeimg binary, a shared download cache, the
//! k0s test double and a small HTTP server on 127.0.0.1 that serves it through edgeimg's real
//! download path.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

pub const K0S_VERSION: &str = "v1.34.10+k0s.0";

/// The k0s TEST DOUBLE. The real k0s cannot be downloaded here; this stand-in answers
/// `k0s version`, records every call on the data partition and on the console, and stays
/// running like the real controller or worker would. Like them it becomes healthy a few
/// seconds after it started ([`STAND_IN_HEALTHY_AFTER`]): it serves kubelet's
/// `http://127.0.0.1:10248/healthz` (busybox httpd) and answers `k0s kubectl get --raw
/// /readyz` with `ok`. A node whose config writes `/etc/k0s-stand-in/never-healthy` gets a
/// k0s that never becomes healthy; after 20 s it prints [`STAND_IN_NEVER_HEALTHY`].
///
/// Where the cluster test depends on it, it does what k0s does with the files edgeimg
/// leaves, and says so on the console (lines starting `k0s-stand-in: controller:` or
/// `k0s-stand-in: worker:`):
/// - a controller with a CA in `/var/lib/k0s/pki` checks that the 8 files k0s needs there
///   are present (keys 0600), counts the bootstrap-token Secrets in
///   `/var/lib/k0s/manifests/edgeimg-tokens/`, and listens on 6443 on every address (plain
///   HTTP; the real API speaks TLS): `/healthz`, `/readyz`, its `ca.crt`, and a join
///   endpoint that accepts a node's `id.secret` only when a Secret of that directory holds
///   that token id and secret, and prints the node's hostname;
/// - a worker decodes its `--token-file` (base64 of gzip of a kubeconfig, as k0s does),
///   checks the user is `kubelet-bootstrap`, fetches `ca.crt` from the token's server
///   (retrying every 3 s until it answers, one line), checks it is the CA in the token, and
///   joins with the token: [`STAND_IN_JOINED`]`<host:port>` on success. Its kubelet health
///   does not wait for the join (other tests boot workers whose token names no controller).
pub fn k0s_stand_in() -> Vec<u8> {
    r#"#!/bin/sh
# k0s stand-in (test double built by edgeimg's tests; not the real k0s)
if [ "$1" = version ]; then echo "@K0S_VERSION@"; exit 0; fi
state=/run/k0s-stand-in
data=/var/lib/k0s
if [ "$1" = kubectl ]; then
  [ "$*" = "kubectl get --raw /readyz" ] && [ -e $state/healthy ] && echo ok && exit 0
  echo "The connection to the server localhost:6443 was refused" >&2
  exit 1
fi
mkdir -p $data $state
echo "$*" >> $data/stand-in.calls
echo "k0s-stand-in: $*" > /dev/console
say() { echo "k0s-stand-in: $*" > /dev/console; }
token_file=
prev=
for a in "$@"; do
  [ "$prev" = --token-file ] && token_file=$a
  prev=$a
done

# What k0s's controller reads from the data dir; then the API port.
controller_api() {
  pki=$data/pki
  if [ ! -e $pki/ca.crt ]; then
    say "controller: no CA in $pki (k0s makes its own)"
    return 0
  fi
  bad=
  for f in ca.crt ca.key sa.key sa.pub etcd/ca.crt etcd/ca.key front-proxy-ca.crt front-proxy-ca.key; do
    [ -s $pki/$f ] || bad="$bad $f(missing)"
  done
  for f in ca.key sa.key etcd/ca.key front-proxy-ca.key; do
    [ -s $pki/$f ] || continue
    m=$(stat -c %a $pki/$f)
    [ "$m" = 600 ] || bad="$bad $f(mode $m)"
  done
  if [ -n "$bad" ]; then
    say "controller: pki in $pki is not usable:$bad"
    exit 1
  fi
  n=$(find $data/manifests/edgeimg-tokens -name "*.yaml" 2>/dev/null | wc -l)
  say "controller: pki complete in $pki (8 files), $n bootstrap token Secrets in $data/manifests/edgeimg-tokens"
  api=$state/api
  mkdir -p $api/cgi-bin
  echo ok > $api/healthz
  echo ok > $api/readyz
  cp $pki/ca.crt $api/ca.crt
  cat > $api/cgi-bin/join <<'CGI'
#!/bin/sh
# The stand-in's bootstrap-token authentication: QUERY_STRING is host=NAME&token=ID.SECRET.
host=
token=
IFS='&'
for kv in $QUERY_STRING; do
  case $kv in host=*) host=${kv#host=} ;; token=*) token=${kv#token=} ;; esac
done
unset IFS
case $host in '' | *[!a-z0-9.-]*) host=unnamed ;; esac
id=${token%%.*}
secret=${token#*.}
found=
for s in /var/lib/k0s/manifests/edgeimg-tokens/*.yaml; do
  [ -e "$s" ] || continue
  grep -qx "  token-id: $(printf %s "$id" | base64)" "$s" &&
    grep -qx "  token-secret: $(printf %s "$secret" | base64)" "$s" &&
    grep -qx "  usage-bootstrap-authentication: $(printf true | base64)" "$s" && found=$s
done
printf 'Content-Type: text/plain\r\n\r\n'
case $id in '' | *[!a-z0-9]*) id=malformed ;; esac
if [ -n "$found" ]; then
  echo "k0s-stand-in: controller: node $host joined with bootstrap token $id (${found##*/})" > /dev/console
  echo joined
else
  echo "k0s-stand-in: controller: refused node $host: no bootstrap token Secret for $id" > /dev/console
  echo refused
fi
CGI
  chmod 0755 $api/cgi-bin/join
  busybox httpd -p 0.0.0.0:6443 -h $api
  say "controller: API stand-in listening on :6443"
}

# What k0s's worker does with its token: decode it, trust its CA, reach its server.
worker_join() {
  if [ -z "$token_file" ] || [ ! -s "$token_file" ]; then
    say "worker: no token file"
    return 0
  fi
  kc=$state/kubeconfig
  if ! base64 -d < "$token_file" 2>/dev/null | gunzip > $kc 2>/dev/null; then
    say "worker: $token_file is not a k0s join token (base64 of gzip)"
    return 0
  fi
  server=$(sed -n 's/^ *server: *//p' $kc | head -n 1)
  user=$(sed -n 's/^ *user: *\([^ ].*\)$/\1/p' $kc | head -n 1)
  tok=$(sed -n 's/^ *token: *//p' $kc | head -n 1)
  sed -n 's/^ *certificate-authority-data: *//p' $kc | head -n 1 | base64 -d > $state/token-ca.crt
  hostport=${server#https://}
  hostport=${hostport%%/*}
  say "worker: token for $server as $user (token id ${tok%%.*})"
  if [ "$user" != kubelet-bootstrap ]; then
    say "worker: token user $user is not kubelet-bootstrap"
    return 0
  fi
  tries=0
  until wget -q -T 5 -O $state/controller-ca.crt "http://$hostport/ca.crt" 2>/dev/null; do
    [ $tries = 0 ] && say "worker: $hostport does not answer yet, retrying every 3 s"
    tries=$((tries + 1))
    sleep 3
  done
  if ! cmp -s $state/token-ca.crt $state/controller-ca.crt; then
    say "worker: the CA in the token is not the ca.crt $hostport serves"
    return 0
  fi
  sum=$(sha256sum < $state/token-ca.crt | cut -c 1-16)
  answer=$(wget -q -T 5 -O - "http://$hostport/cgi-bin/join?host=$(hostname)&token=$tok" 2>/dev/null)
  if [ "$answer" = joined ]; then
    say "worker: joined $hostport after $tries retries (the token's CA is its ca.crt, sha256 $sum...)"
  else
    say "worker: $hostport refused the token: $answer"
  fi
}

case "$1" in
  controller|worker)
    [ "$1" = controller ] && controller_api
    [ "$1" = worker ] && (worker_join) &
    (
      if [ -e /etc/k0s-stand-in/never-healthy ]; then
        sleep 20
        echo "@NEVER_HEALTHY@" > /dev/console
      else
        sleep @HEALTHY_AFTER@
        mkdir -p $state/www
        echo ok > $state/www/healthz
        busybox httpd -p 127.0.0.1:10248 -h $state/www
        : > $state/healthy
      fi
    ) &
    while :; do sleep 3600; done ;;
esac
exit 0
"#
    .replace("@K0S_VERSION@", K0S_VERSION)
    .replace("@NEVER_HEALTHY@", STAND_IN_NEVER_HEALTHY)
    .replace("@HEALTHY_AFTER@", &STAND_IN_HEALTHY_AFTER.to_string())
    .into_bytes()
}

/// What a worker's stand-in prints once it joined the controller its token names (followed
/// by `host:port`).
pub const STAND_IN_JOINED: &str = "k0s-stand-in: worker: joined ";

/// Seconds after its start when the stand-in's kubelet and API server answer ok.
pub const STAND_IN_HEALTHY_AFTER: u32 = 4;

/// What a never-healthy stand-in prints 20 s after it started.
pub const STAND_IN_NEVER_HEALTHY: &str = "k0s-stand-in: still not healthy after 20 s";

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edgeimg"))
}

/// Downloads are shared by every test (and kept between runs) under target/.
pub fn cache_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("edgeimg-cache");
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn edgeimg(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running edgeimg")
}

/// `edgeimg ARGS` run in `dir` (for relative paths such as `--device-file null` in /dev).
pub fn edgeimg_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running edgeimg")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The Debian package of a host tool the tests use (scripts/install-deps installs them all).
pub fn debian_package(tool: &str) -> &'static str {
    match tool {
        "gpg" => "gpg",
        "mcopy" | "mdir" | "mtype" | "mmd" => "mtools",
        "mkfs.fat" | "fsck.fat" => "dosfstools",
        "sgdisk" => "gdisk",
        "sfdisk" | "fdisk" => "fdisk",
        "unsquashfs" | "mksquashfs" => "squashfs-tools",
        "xz" => "xz-utils",
        "bmaptool" => "bmap-tools",
        "veritysetup" => "cryptsetup-bin",
        "busybox" => "busybox-static",
        "mkfs.ext4" | "resize2fs" => "e2fsprogs",
        "wpa_passphrase" | "wpa_supplicant" => "wpasupplicant",
        "ssh-keygen" => "openssh-client",
        "qemu-system-x86_64" => "qemu-system-x86",
        "qemu-system-aarch64" | "qemu-system-arm" => "qemu-system-arm",
        "cmp" => "diffutils",
        "dtc" => "device-tree-compiler",
        "sh" => "dash",
        "time" => "time",
        "openssl" => "openssl",
        "kubectl" => "kubernetes-client",
        "pyspdxtools" => "spdx-tools (pip)",
        "objdump" | "objcopy" => "binutils",
        "sbverify" => "sbsigntool",
        "virt-fw-vars" => "virt-firmware (pip)",
        "dpkg-query" => "dpkg",
        "vde_switch" => "vde2",
        _ => "coreutils",
    }
}

/// A host tool the tests judge outputs with; absent means the test setup is incomplete.
pub fn need(tool: &str) {
    need_tool(tool, debian_package(tool));
}

/// [`need`], naming the Debian package to install.
pub fn need_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .any(|d| d.join(tool).is_file() || Path::new("/usr/sbin").join(tool).is_file())
        })
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: apt-get install {package} (scripts/install-deps test installs every test dependency)"
    );
}

/// A join token of the shape `k0s token create` prints: base64 of a gzip'd kubeconfig (this
/// one names no real cluster; made with `gzip -9n < kubeconfig.yaml | base64 -w0`).
pub const TEST_JOIN_TOKEN: &str = "H4sIAAAAAAACA3VRQW7CMBC85xX+QMABSoslLqSiUhSpImloyc1JNuBi7MjeIKqqf68x6aFS69POeDw7I/NObMFYoRUj5yioZW/RYRaEZJhZQNypwaBoRc0RQt7jQRuBH2HDkTOS5hTTPIqzoklexOox2yZFXpTJhq6LzN9RjFUm6+lmXz4tot3pItN41VcO7/LVe/mWUP5adrvJmpYb7fVpsX3O4n+89sulD2XBnF1AckDsLBuPa63QaCnBjODCT52EkVBnLkXD5rPZ1L1R/ASMHKkNrlq44K3pbR6aDrW96kr01qO+AgkYVlqjRcO73269MaAw/HHy5FGohpFYq1bsg85AC05Tg2Xk8yu4uvrlg8kf9n6xj4D6CO6DeFU30I5oNJnO7ub3D4sbEXwDC3HrLsUBAAA=";

pub fn run_tool(cmd: &str, args: &[&str]) -> Output {
    need(cmd);
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

/// Serves files from memory on 127.0.0.1 and counts requests.
pub struct Server {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
}

impl Server {
    pub fn start(files: Vec<(String, Vec<u8>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                match files.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(body);
                    }
                    None => {
                        let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                }
                let _ = s.flush();
                let mut sink = Vec::new();
                let _ = s.take(0).read_to_end(&mut sink);
            }
        });
        Server { port, requests }
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// One k0s server for the whole test binary, serving the stand-in at the path of the real
/// release asset.
pub fn k0s_server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let body = k0s_stand_in();
        let mut files = Vec::new();
        for arch in ["amd64", "arm64", "arm"] {
            files.push((
                format!(
                    "/releases/{}/k0s-{}-{arch}",
                    K0S_VERSION.replace('+', "%2B"),
                    K0S_VERSION.replace('+', "%2B")
                ),
                body.clone(),
            ));
        }
        Server::start(files)
    })
}

/// The k0s arguments every test build uses: the stand-in through the real download path.
pub fn k0s_args() -> Vec<String> {
    let s = k0s_server();
    vec![
        "--k0s-url".into(),
        format!(
            "http://127.0.0.1:{}/releases/{{version}}/k0s-{{version}}-{{arch}}",
            s.port
        ),
        "--k0s-sha256".into(),
        sha256_hex(&k0s_stand_in()),
    ]
}

/// Runs `edgeimg build` with the shared cache and the stand-in; returns the output.
pub fn build(out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["build".into(), "--out".into(), out.display().to_string()];
    args.push("--cache-dir".into());
    args.push(cache_dir().display().to_string());
    args.extend(k0s_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    edgeimg(&refs)
}

/// One section of a PE file (a UKI), as binutils' `objcopy` extracts it.
pub fn uki_section(pe: &Path, section: &str) -> Vec<u8> {
    let out = pe.with_extension(format!("section{section}"));
    let o = run_tool(
        "objcopy",
        &[
            "-O",
            "binary",
            &format!("--only-section={section}"),
            pe.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "objcopy {section}: {}", stderr(&o));
    let data = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).ok();
    data
}

/// Copies `len` bytes at `offset` of `image` into a new file (for tools that take no offset).
pub fn extract(image: &Path, offset: u64, len: u64, to: &Path) {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(image).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = std::fs::File::create(to).unwrap();
    std::io::copy(&mut f.take(len), &mut out).unwrap();
}

/// Writes `node` (a node config) to `dir/node.toml` and builds into `dir/out` with `--node`
/// plus `args`; panics with the build's stderr when it fails. Returns the out folder.
pub fn build_with_node(dir: &Path, node: &str, args: &[&str]) -> PathBuf {
    let node_file = dir.join("node.toml");
    std::fs::write(&node_file, node).unwrap();
    let out = dir.join("out");
    let mut all: Vec<&str> = args.to_vec();
    let node_arg = node_file.display().to_string();
    all.extend(["--node", node_arg.as_str()]);
    let o = build(&out, &all);
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    out
}

/// A join token file for the stand-in (mode 0600, as edgeimg wants it), in `dir`.
pub fn token_file(dir: &Path) -> PathBuf {
    let t = dir.join("join.token");
    std::fs::write(&t, format!("{TEST_JOIN_TOKEN}\n")).unwrap();
    std::fs::set_permissions(&t, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    t
}

/// A copy of the project's boards/, profiles/ and overlays/ at `dir/name`, for a test build
/// whose board, profile or overlay differs (`--data-dir`).
pub fn data_dir_copy(dir: &Path, name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for sub in ["boards", "profiles", "overlays"] {
        let from = root.join(sub).display().to_string();
        let o = run_tool("cp", &["-a", &from, &to.display().to_string()]);
        assert!(o.status.success(), "cp -a {from}: {}", stderr(&o));
    }
    to
}

/// A sparse copy of `from` at `to` (images are mostly holes).
pub fn sparse_copy(from: &Path, to: &Path) {
    let o = run_tool(
        "cp",
        &[
            "--sparse=always",
            from.to_str().unwrap(),
            to.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "cp: {}", stderr(&o));
}

/// The QEMU settings of `board` from the project's boards/.
pub fn board_qemu(board: &str) -> edgeimg::qemu::QemuSpec {
    let data =
        edgeimg::profile::DataDir::locate(Some(Path::new(env!("CARGO_MANIFEST_DIR")))).unwrap();
    data.board(board).unwrap().qemu
}

/// Smoke options the boot tests start from: TCG, a 2 GiB disk, 420 s, the node expected to
/// come up as `role` named `hostname` with a read-only root and the stand-in's version.
pub fn smoke_options(role: &str, hostname: &str) -> edgeimg::qemu::SmokeOptions {
    edgeimg::qemu::SmokeOptions {
        timeout: std::time::Duration::from_secs(420),
        keep: false,
        disk_size: 4096 * 1024 * 1024,
        kvm: false,
        expect: edgeimg::qemu::Expectations {
            role: role.into(),
            hostname: hostname.into(),
            root_ro: true,
            k0s_version: K0S_VERSION.into(),
        },
        extra_console_checks: vec![],
        mac: None,
        guestfwd: vec![],
        switch: None,
    }
}

/// Sectors of the partitions of [`disk_image`].
pub const BOOT_START: u64 = 2048;
pub const BOOT_SECTORS: u64 = 81920;
pub const DATA_START: u64 = BOOT_START + BOOT_SECTORS;
pub const DATA_SECTORS: u64 = 16384;

/// Deterministic bytes that are not a disk image.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A 56 MiB image (mostly holes): GPT, partition 1 FAT32 of 40 MiB (the boot partition `configure`
/// edits), partition 2 with 200 kB of data.
pub fn disk_image(path: &Path) {
    need("sfdisk");
    need("mkfs.fat");
    let f = std::fs::File::create(path).unwrap();
    f.set_len(56 << 20).unwrap();
    drop(f);
    let script = format!(
        "label: gpt\nstart={BOOT_START}, size={BOOT_SECTORS}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         start={DATA_START}, size={DATA_SECTORS}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
    );
    let mut child = std::process::Command::new("sfdisk")
        .args(["-q", path.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("running sfdisk");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed");
    let o = run_tool(
        "mkfs.fat",
        &[
            "-F",
            "32",
            "-n",
            "EDGEIMG",
            &format!("--offset={BOOT_START}"),
            path.to_str().unwrap(),
            &(BOOT_SECTORS / 2).to_string(),
        ],
    );
    assert!(o.status.success(), "mkfs.fat: {}", stderr(&o));
    // What a build leaves on the boot partition, so that configure takes it for edgeimg's:
    // a loader entry and a node config.
    let fat = format!("{}@@{}", path.display(), BOOT_START * 512);
    let files = tempfile::tempdir().unwrap();
    let entry = files.path().join("edgeimg.conf");
    std::fs::write(&entry, "title edgeimg\noptions console=ttyS0\n").unwrap();
    let env = files.path().join("node.env");
    std::fs::write(&env, "NODE_HOSTNAME=''\n").unwrap();
    let o = run_tool(
        "mmd",
        &["-i", &fat, "::/loader", "::/loader/entries", "::/edgeimg"],
    );
    assert!(o.status.success(), "mmd: {}", stderr(&o));
    for (from, to) in [(&entry, "::/loader/entries/"), (&env, "::/edgeimg/")] {
        let o = run_tool("mcopy", &["-i", &fat, from.to_str().unwrap(), to]);
        assert!(o.status.success(), "mcopy: {}", stderr(&o));
    }
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&noise(200_000, 7), DATA_START * 512)
        .unwrap();
}

/// Validates `json` against `src/manifest/schema/<schema>` with python's `jsonschema` (the
/// schema itself checked against its draft first); panics with the validator's message.
pub fn check_json(schema: &str, json: &[u8]) {
    need("python3");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/manifest/schema")
        .join(schema);
    let script = "import json, sys\n\
        import jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        cls = jsonschema.validators.validator_for(schema)\n\
        cls.check_schema(schema)\n\
        errors = sorted(cls(schema).iter_errors(json.load(sys.stdin)), key=lambda e: list(e.path))\n\
        for e in errors:\n    print('/'.join(map(str, e.path)) + ': ' + e.message)\n\
        sys.exit(1 if errors else 0)\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running python3");
    child.stdin.take().unwrap().write_all(json).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{} does not validate against {schema} (python3 jsonschema; pip install jsonschema or \
         apt-get install python3-jsonschema):\n{}{}\n{}",
        "output",
        stdout(&o),
        stderr(&o),
        String::from_utf8_lossy(&json[..json.len().min(4000)])
    );
}

/// The process umask (read and put back at once).
pub fn umask() -> u32 {
    // SAFETY: umask only swaps a process-wide integer; it is put back at once.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    }
}

/// Every published file of an output folder (what SHA256SUMS lists, and SHA256SUMS itself;
/// links followed) has mode 0644 less the umask: readable by the web server or user that
/// serves or copies it, never a private 0600.
pub fn assert_published_modes(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let want = 0o644 & !umask();
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let mut names: Vec<&str> = sums
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, n)| n))
        .collect();
    names.push("SHA256SUMS");
    assert!(names.contains(&"manifest.json"), "{names:?}");
    for n in names {
        let mode = std::fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, want, "{n} has mode {mode:04o}, expected {want:04o}");
    }
}

/// The fleet of the cluster tests (`cluster.rs`, `boot_x86.rs`): static addresses on one local network, no NTP, no DNS.
pub const CLUSTER_FLEET: &str = r#"
[defaults]
time = { ntp = [] }
gateway = "10.0.0.254"

[nodes.ctl-1]
role = "controller"
address = "10.0.0.1/24"

[nodes.pi-07]
role = "worker"
address = "10.0.0.7/24"

[nodes.pi-08]
role = "worker"
address = "10.0.0.8/24"
"#;
