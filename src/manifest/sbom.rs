//! `sbom.spdx.json`: an SPDX 2.3 JSON software bill of materials for one image.
//!
//! The document describes the image (a package whose checksum is the image's, or the root
//! squashfs's for network boot), which CONTAINS the operating system (an OPERATING-SYSTEM
//! package `debian`, version from the suite, as trivy wants it) and the k0s binary
//! (`pkg:github/k0sproject/k0s@<version>`, the purl scanners match k0s advisories by); the
//! operating system CONTAINS every Debian package of the closure, each with the purl syft
//! writes for an installed Debian package: `pkg:deb/debian/<name>@<version>?arch=<arch>&
//! distro=debian-<release>[&upstream=<source>[@<source version>]]` (grype keys advisories by
//! the source package). edgeimg itself is the image's BUILD_TOOL_OF. Purls are written in the
//! purl specification's canonical form (what `packageurl-python` prints back).
//! Everything comes from the plan and the verified inputs: the creation time is the plan's
//! `SOURCE_DATE_EPOCH` and the document namespace is derived from the plan hash, so that two
//! builds of one plan write the same bytes.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::InputRecord;

/// What the SBOM is made from.
pub struct SbomInput<'a> {
    /// `<board>-<role>`.
    pub stem: &'a str,
    /// The image file name, e.g. `x86-64-worker.img`.
    pub image_file: &'a str,
    /// sha256 of the image file.
    pub image_sha256: &'a str,
    pub plan_hash: &'a str,
    pub edgeimg_version: &'a str,
    pub source_date_epoch: u64,
    /// Debian suite, for the package URLs (`distro=`).
    pub suite: &'a str,
    /// Every Debian package in the image.
    pub debs: &'a [SbomDeb],
    /// The k0s binary.
    pub k0s: &'a InputRecord,
    /// The k0s airgap bundle (`--airgap-bundle`), if the image ships one.
    pub airgap: Option<&'a InputRecord>,
}

/// The SBOM's file name in an output folder.
pub const SBOM_FILE: &str = "sbom.spdx.json";

/// A Debian package with its source package.
pub struct SbomDeb {
    pub record: InputRecord,
    /// The source package's name and version.
    pub source: String,
    pub source_version: String,
}

const NOASSERTION: &str = "NOASSERTION";

/// Debian's release number of a suite's code name (`trixie`: 13), for `distro=debian-13`;
/// `-backports`, `-updates` and `-security` suites are their release's. Other suites (sid)
/// keep their name.
pub fn debian_release(suite: &str) -> String {
    let base = suite.split('-').next().unwrap_or(suite);
    match base {
        "buster" => "10",
        "bullseye" => "11",
        "bookworm" => "12",
        "trixie" => "13",
        "forky" => "14",
        "duke" => "15",
        other => other,
    }
    .to_string()
}

/// The purl of a Debian binary package (`upstream=` names the source when it differs from the
/// package, with its version when that differs too).
pub fn deb_purl(d: &SbomDeb, suite: &str) -> String {
    let r = &d.record;
    let mut q = format!(
        "arch={}&distro={}",
        purl_escape(&r.architecture),
        purl_escape(&format!("debian-{}", debian_release(suite)))
    );
    if d.source != r.name || d.source_version != r.version {
        let upstream = if d.source_version != r.version {
            format!("{}@{}", d.source, d.source_version)
        } else {
            d.source.clone()
        };
        q.push_str(&format!("&upstream={}", purl_escape(&upstream)));
    }
    format!(
        "pkg:deb/debian/{}@{}?{q}",
        purl_escape(&r.name),
        purl_escape(&r.version)
    )
}

/// The SPDX document as pretty-printed JSON, ending in a newline.
pub fn render(input: &SbomInput) -> String {
    let mut s = serde_json::to_string_pretty(&document(input)).expect("SBOM serializes");
    s.push('\n');
    s
}

/// The SPDX 2.3 document.
pub fn document(input: &SbomInput) -> Value {
    let mut ids = BTreeSet::new();
    let image_id = unique_id(&mut ids, "image", input.stem);
    let tool_id = unique_id(&mut ids, "tool", "edgeimg");
    let k0s_id = unique_id(&mut ids, "bin", "k0s");
    let os_id = unique_id(&mut ids, "os", "debian");
    let release = debian_release(input.suite);

    let mut packages = vec![
        json!({
            "SPDXID": image_id,
            "name": input.image_file,
            "versionInfo": &input.plan_hash[..input.plan_hash.len().min(16)],
            "packageFileName": input.image_file,
            "supplier": NOASSERTION,
            "downloadLocation": "NONE",
            "filesAnalyzed": false,
            "checksums": [sha256(input.image_sha256)],
            "primaryPackagePurpose": "FILE",
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
            "comment": format!("edgeimg image {}, plan hash {}", input.stem, input.plan_hash),
        }),
        json!({
            "SPDXID": tool_id,
            "name": "edgeimg",
            "versionInfo": input.edgeimg_version,
            "supplier": NOASSERTION,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": false,
            "primaryPackagePurpose": "APPLICATION",
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": "Apache-2.0",
            "copyrightText": NOASSERTION,
        }),
        with_source_info(
            json!({
                "SPDXID": k0s_id,
                "name": "k0s",
                "versionInfo": input.k0s.version,
                "supplier": NOASSERTION,
                "downloadLocation": download_location(&input.k0s.source),
                "filesAnalyzed": false,
                "checksums": [sha256(&input.k0s.sha256)],
                "primaryPackagePurpose": "APPLICATION",
                "licenseConcluded": NOASSERTION,
                "licenseDeclared": NOASSERTION,
                "copyrightText": NOASSERTION,
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": format!(
                        "pkg:github/k0sproject/k0s@{}",
                        purl_escape(&input.k0s.version)
                    ),
                }],
            }),
            &input.k0s.source,
        ),
        json!({
            "SPDXID": os_id,
            "name": "debian",
            "versionInfo": release,
            "supplier": "Organization: Debian",
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": false,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
            "comment": format!("Debian {} ({}): the packages below, as listed in the root's /var/lib/dpkg/status", release, input.suite),
        }),
    ];
    let mut relationships = vec![
        relationship("SPDXRef-DOCUMENT", "DESCRIBES", &image_id),
        relationship(&tool_id, "BUILD_TOOL_OF", &image_id),
        relationship(&image_id, "CONTAINS", &k0s_id),
        relationship(&image_id, "CONTAINS", &os_id),
    ];
    if let Some(a) = input.airgap {
        let id = unique_id(&mut ids, "bundle", &a.name);
        packages.push(with_source_info(
            json!({
                "SPDXID": id,
                "name": a.name,
                "versionInfo": a.version,
                "packageFileName": a.source.rsplit('/').next().unwrap_or(&a.source),
                "supplier": NOASSERTION,
                "downloadLocation": download_location(&a.source),
                "filesAnalyzed": false,
                "checksums": [sha256(&a.sha256)],
                "primaryPackagePurpose": "CONTAINER",
                "licenseConcluded": NOASSERTION,
                "licenseDeclared": NOASSERTION,
                "copyrightText": NOASSERTION,
                "comment": "OCI image layout tarball imported by the k0s worker",
            }),
            &a.source,
        ));
        relationships.push(relationship(&image_id, "CONTAINS", &id));
    }

    let mut debs: Vec<&SbomDeb> = input.debs.iter().collect();
    debs.sort_by(|a, b| {
        let (a, b) = (&a.record, &b.record);
        (&a.name, &a.architecture, &a.version).cmp(&(&b.name, &b.architecture, &b.version))
    });
    for deb in debs {
        let d = &deb.record;
        let id = unique_id(&mut ids, "deb", &format!("{}-{}", d.name, d.architecture));
        let mut pkg = json!({
            "SPDXID": id,
            "name": d.name,
            "versionInfo": d.version,
            "packageFileName": d.source.rsplit('/').next().unwrap_or(&d.source),
            "supplier": "Organization: Debian",
            "downloadLocation": download_location(&d.source),
            "filesAnalyzed": false,
            "checksums": [sha256(&d.sha256)],
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": deb_purl(deb, input.suite),
            }],
        });
        if deb.source != d.name || deb.source_version != d.version {
            pkg["sourceInfo"] = Value::String(format!(
                "built package from: {} {}",
                deb.source, deb.source_version
            ));
        }
        packages.push(with_source_info(pkg, &d.source));
        if let (Some(suite), Some(last)) = (&d.suite, packages.last_mut()) {
            last["comment"] = Value::String(format!("from Debian suite {suite}"));
        }
        relationships.push(relationship(&os_id, "CONTAINS", &id));
    }

    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("edgeimg-{}", input.stem),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/edgeimg-{}-{}",
            input.stem, input.plan_hash
        ),
        "creationInfo": {
            "created": spdx_date(input.source_date_epoch),
            "creators": [format!("Tool: edgeimg-{}", input.edgeimg_version)],
            "comment": "created is the plan's SOURCE_DATE_EPOCH",
        },
        "packages": packages,
        "relationships": relationships,
    })
}

fn sha256(hex: &str) -> Value {
    json!({ "algorithm": "SHA256", "checksumValue": hex.to_ascii_lowercase() })
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({
        "spdxElementId": from,
        "relationshipType": kind,
        "relatedSpdxElement": to,
    })
}

/// A URL whose host is a domain name stays as it is. Anything else cannot be an SPDX download
/// location (the spec's pattern wants a host ending in a 2-5 letter top-level domain): a local
/// file given for k0s, or a server named by its IP address; such a source is kept in
/// `sourceInfo` instead.
fn download_location(source: &str) -> &str {
    if spdx_url(source) {
        source
    } else {
        NOASSERTION
    }
}

/// Adds `sourceInfo` naming the source when `downloadLocation` cannot.
fn with_source_info(mut pkg: Value, source: &str) -> Value {
    if !spdx_url(source) {
        let retrieved = format!("retrieved from {source}");
        pkg["sourceInfo"] = Value::String(match pkg.get("sourceInfo").and_then(Value::as_str) {
            Some(built) => format!("{built}; {retrieved}"),
            None => retrieved,
        });
    }
    pkg
}

fn spdx_url(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return false,
        None => host_port,
    };
    let labels: Vec<&str> = host.split('.').collect();
    let tld = labels.last().copied().unwrap_or("");
    labels.len() >= 2
        && (2..=5).contains(&tld.len())
        && tld.bytes().all(|b| b.is_ascii_alphabetic())
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `SPDXRef-<kind>-<name>` with only the characters SPDX allows (`[A-Za-z0-9.-]`), made
/// unique by a numeric suffix.
fn unique_id(used: &mut BTreeSet<String>, kind: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            '+' => 'p',
            _ => '-',
        })
        .collect();
    let base = format!("SPDXRef-{kind}-{clean}");
    let mut id = base.clone();
    let mut n = 2;
    while used.contains(&id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    used.insert(id.clone());
    id
}

/// Percent-encodes what a purl component may not hold as is (the purl specification: every
/// byte but unreserved characters and `:`, which its canonical form leaves unencoded).
fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' | b':' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `YYYY-MM-DDThh:mm:ssZ` (UTC) for seconds since the epoch.
pub fn spdx_date(epoch: u64) -> String {
    let c = crate::util::time::Civil::from_unix(epoch);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, version: &str, source: &str) -> InputRecord {
        InputRecord {
            name: name.into(),
            version: version.into(),
            source: source.into(),
            sha256: "ab".repeat(32),
            architecture: "amd64".into(),
            suite: None,
        }
    }

    #[test]
    fn an_airgap_bundle_is_a_contained_container_package_with_its_digest() {
        let k0s = rec("k0s", "v1", "http://k/k0s");
        let bundle = InputRecord {
            sha256: "ef".repeat(32),
            ..rec(
                "k0s-airgap-bundle",
                "v1",
                "/tmp/k0s-airgap-bundle-v1-linux-amd64.tar",
            )
        };
        let d = document(&SbomInput {
            stem: "x86-64-worker",
            image_file: "x86-64-worker.img",
            image_sha256: &"cd".repeat(32),
            plan_hash: &"0f".repeat(32),
            edgeimg_version: "0.1.0",
            source_date_epoch: 1_700_000_000,
            suite: "bookworm",
            debs: &[],
            k0s: &k0s,
            airgap: Some(&bundle),
        });
        if let Ok(p) = std::env::var("EDGEIMG_SBOM_SAMPLE") {
            std::fs::write(p, serde_json::to_string_pretty(&d).unwrap()).unwrap();
        }
        let pkgs = d["packages"].as_array().unwrap();
        let b = pkgs
            .iter()
            .find(|p| p["name"] == "k0s-airgap-bundle")
            .unwrap();
        assert_eq!(b["checksums"][0]["checksumValue"], "ef".repeat(32));
        assert_eq!(b["primaryPackagePurpose"], "CONTAINER");
        assert_eq!(b["packageFileName"], "k0s-airgap-bundle-v1-linux-amd64.tar");
        let image = pkgs[0]["SPDXID"].as_str().unwrap();
        assert!(d["relationships"].as_array().unwrap().iter().any(|r| {
            r["spdxElementId"] == image
                && r["relationshipType"] == "CONTAINS"
                && r["relatedSpdxElement"] == b["SPDXID"]
        }));
        // Without one, the document is what it was.
        assert!(!sample(&[], &k0s).to_string().contains("airgap"));
    }

    fn deb(record: InputRecord, source: &str, source_version: &str) -> SbomDeb {
        SbomDeb {
            record,
            source: source.into(),
            source_version: source_version.into(),
        }
    }

    fn same_source(records: &[InputRecord]) -> Vec<SbomDeb> {
        records
            .iter()
            .map(|r| deb(r.clone(), &r.name, &r.version))
            .collect()
    }

    fn sample(debs: &[InputRecord], k0s: &InputRecord) -> Value {
        let mut sources = same_source(debs);
        for d in &mut sources {
            if d.record.name == "libstdc++6" {
                d.source = "gcc-12".into();
            }
            if d.record.name == "busybox-static" {
                d.source = "busybox".into();
                d.source_version = "1:1.35.0-4".into();
            }
        }
        sample_with(&sources, k0s)
    }

    fn sample_with(debs: &[SbomDeb], k0s: &InputRecord) -> Value {
        document(&SbomInput {
            stem: "x86-64-worker",
            image_file: "x86-64-worker.img",
            image_sha256: &"cd".repeat(32),
            plan_hash: &"0f".repeat(32),
            edgeimg_version: "0.1.0",
            source_date_epoch: 1_700_000_000,
            suite: "bookworm",
            debs,
            k0s,
            airgap: None,
        })
    }

    #[test]
    fn dates_are_utc_iso8601() {
        assert_eq!(spdx_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(spdx_date(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(spdx_date(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(spdx_date(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn every_package_is_contained_with_its_checksum_and_purl() {
        let debs = vec![
            rec(
                "libstdc++6",
                "12.2.0-14",
                "http://deb.example.org/debian/pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb",
            ),
            rec(
                "busybox-static",
                "1:1.35.0-4+b3",
                "http://deb.example.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4+b3_amd64.deb",
            ),
        ];
        let k0s = rec("k0s", "v1.31.2+k0s.0", "/some/local/k0s");
        let d = sample(&debs, &k0s);
        assert_eq!(d["spdxVersion"], "SPDX-2.3");
        assert_eq!(d["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        assert!(d["documentNamespace"]
            .as_str()
            .unwrap()
            .ends_with(&"0f".repeat(32)));
        let pkgs = d["packages"].as_array().unwrap();
        assert_eq!(pkgs.len(), 6);
        let ids: BTreeSet<&str> = pkgs.iter().map(|p| p["SPDXID"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 6, "SPDX ids are unique");
        for id in &ids {
            assert!(
                id[8..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
                "{id}"
            );
        }
        let bb = pkgs.iter().find(|p| p["name"] == "busybox-static").unwrap();
        assert_eq!(bb["versionInfo"], "1:1.35.0-4+b3");
        assert_eq!(bb["checksums"][0]["algorithm"], "SHA256");
        assert_eq!(
            bb["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/busybox-static@1:1.35.0-4%2Bb3?arch=amd64&distro=debian-12&upstream=busybox%401:1.35.0-4"
        );
        assert_eq!(bb["sourceInfo"], "built package from: busybox 1:1.35.0-4");
        let lib = pkgs.iter().find(|p| p["name"] == "libstdc++6").unwrap();
        assert_eq!(
            lib["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&distro=debian-12&upstream=gcc-12"
        );
        let os = pkgs.iter().find(|p| p["name"] == "debian").unwrap();
        assert_eq!(os["primaryPackagePurpose"], "OPERATING-SYSTEM");
        assert_eq!(os["versionInfo"], "12");
        assert!(bb["downloadLocation"]
            .as_str()
            .unwrap()
            .starts_with("http://deb.example.org/"));
        let k = pkgs.iter().find(|p| p["name"] == "k0s").unwrap();
        assert_eq!(k["downloadLocation"], NOASSERTION, "a local path is no URL");
        assert_eq!(
            k["externalRefs"][0]["referenceLocator"],
            "pkg:github/k0sproject/k0s@v1.31.2%2Bk0s.0"
        );
        let rels = d["relationships"].as_array().unwrap();
        let image_id = pkgs[0]["SPDXID"].as_str().unwrap();
        assert!(rels.iter().any(|r| r["spdxElementId"] == "SPDXRef-DOCUMENT"
            && r["relationshipType"] == "DESCRIBES"
            && r["relatedSpdxElement"] == image_id));
        let os_id = os["SPDXID"].as_str().unwrap();
        for p in &pkgs[2..] {
            let parent = if p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .is_some_and(|l| l.starts_with("pkg:deb/"))
            {
                os_id
            } else {
                image_id
            };
            assert!(
                rels.iter().any(|r| r["spdxElementId"] == parent
                    && r["relationshipType"] == "CONTAINS"
                    && r["relatedSpdxElement"] == p["SPDXID"]),
                "{} not contained",
                p["name"]
            );
        }
    }

    #[test]
    fn same_input_in_another_order_gives_the_same_bytes() {
        let a = rec("a", "1", "http://deb.example.org/a.deb");
        let b = rec("b", "2", "http://deb.example.org/b.deb");
        let k0s = rec("k0s", "v1", "http://k/k0s");
        let x = sample(&[a.clone(), b.clone()], &k0s);
        let y = sample(&[b, a], &k0s);
        assert_eq!(x.to_string(), y.to_string());
    }

    #[test]
    fn only_domain_urls_are_download_locations() {
        for ok in [
            "http://deb.example.org/debian/pool/a.deb",
            "https://mirror.example.co.uk:8443/x",
            "http://user@files.example.net",
        ] {
            assert!(spdx_url(ok), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:35113/releases/k0s",
            "http://localhost/x",
            "/var/cache/k0s",
            "ftp://example.org/x",
            "http://example.org:/x",
            "http://-bad.example.org/",
        ] {
            assert!(!spdx_url(bad), "{bad}");
        }
        let p = with_source_info(json!({}), "http://127.0.0.1:1/k0s");
        assert_eq!(p["sourceInfo"], "retrieved from http://127.0.0.1:1/k0s");
        assert!(with_source_info(json!({}), "http://a.example.org/k")
            .get("sourceInfo")
            .is_none());
    }

    #[test]
    fn releases_come_from_the_suite() {
        assert_eq!(debian_release("trixie"), "13");
        assert_eq!(debian_release("bookworm-backports"), "12");
        assert_eq!(debian_release("forky"), "14");
        assert_eq!(debian_release("sid"), "sid");
    }

    #[test]
    fn clashing_ids_get_suffixes() {
        let mut used = BTreeSet::new();
        assert_eq!(unique_id(&mut used, "deb", "a+b"), "SPDXRef-deb-apb");
        assert_eq!(unique_id(&mut used, "deb", "a+b"), "SPDXRef-deb-apb-2");
        assert_eq!(unique_id(&mut used, "deb", "a_b"), "SPDXRef-deb-a-b");
    }
}
