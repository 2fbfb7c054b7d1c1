//! The publish steps one by one: a set is published over another and stopped after each step
//! (as a SIGKILL or a power cut there would leave it); a reader's view is checked at that
//! point, after the next build's clean-up, and after the next publish.

use super::*;
use crate::util::digest::sha256_file;

type Set = &'static [(&'static str, &'static str)];

const OLD: Set = &[
    ("a.img", "old image"),
    ("a.bmap", "old bmap"),
    ("only-old.txt", "gone in new"),
    ("sub/deep/x", "old x"),
];
const NEW: Set = &[
    ("a.img", "new image"),
    ("a.bmap", "new bmap"),
    ("only-new.txt", "new name"),
    ("sub/deep/x", "new x"),
    ("sub/other/y", "new y"),
];
const THIRD: Set = &[("a.img", "third image"), ("sub/deep/x", "third x")];

/// Writes `set` (each file's text tagged with `tag`) plus `manifest.json` (the names) and
/// `SHA256SUMS` (their digests) into `dir`; returns every name.
fn write_set(dir: &Path, tag: &str, set: Set) -> Vec<String> {
    let mut names = Vec::new();
    for (n, text) in set {
        let p = dir.join(n);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("{tag}:{text}")).unwrap();
        names.push(n.to_string());
    }
    let listed: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
    std::fs::write(
        dir.join("manifest.json"),
        format!("{tag}:{}", serde_json::to_string(&listed).unwrap()),
    )
    .unwrap();
    names.push("manifest.json".into());
    let mut sums = String::new();
    for n in &names {
        sums.push_str(&format!("{}  {n}\n", sha256_file(&dir.join(n)).unwrap()));
    }
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
    names.push("SHA256SUMS".into());
    names
}

/// A staging folder as a killed build would leave it: not locked, pid not alive.
fn stage(folder: &Path, tag: &str, set: Set) -> (PathBuf, Vec<String>) {
    let staged = folder.join(format!("{STAGING_PREFIX}4000000-0/set-{tag}"));
    std::fs::create_dir_all(&staged).unwrap();
    let names = write_set(&staged, tag, set);
    (staged, names)
}

fn publish_whole(folder: &Path, tag: &str, set: Set) {
    let (staged, names) = stage(folder, tag, set);
    assert!(publish_set(&staged, folder, &names, &mut Steps::all()).unwrap());
    std::fs::remove_dir_all(staged.parent().unwrap()).unwrap();
}

/// The visible (not hidden) files of `folder` that resolve, with their contents.
fn visible(folder: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            visible(folder, &p, out);
        } else if let Ok(text) = std::fs::read_to_string(&p) {
            let rel = p
                .strip_prefix(folder)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, text));
        }
    }
}

/// What a reader sees; panics (naming `when`) if it is not one generation, or if
/// `SHA256SUMS` or `manifest.json` name a file that is not there as named. Returns the tag of
/// the files seen (None: nothing seen) and whether the set is whole.
fn view(folder: &Path, when: &str) -> (Option<String>, bool) {
    let mut files = Vec::new();
    visible(folder, folder, &mut files);
    files.sort();
    let tags: std::collections::BTreeSet<&str> = files
        .iter()
        .map(|(_, t)| t.split(':').next().unwrap_or(""))
        .filter(|t| t.len() < 10) // SHA256SUMS has no tag
        .collect();
    assert!(tags.len() <= 1, "{when}: a mix of sets: {files:?}");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let mut whole = false;
    if let Some((_, sums)) = files.iter().find(|(n, _)| n == "SHA256SUMS") {
        let mut listed = vec!["SHA256SUMS"];
        for line in sums.lines() {
            let (digest, name) = line.split_once("  ").unwrap();
            let p = folder.join(name);
            assert!(
                p.is_file(),
                "{when}: SHA256SUMS lists {name}, which is not there"
            );
            assert_eq!(sha256_file(&p).unwrap(), digest, "{when}: {name} differs");
            listed.push(name);
        }
        listed.sort();
        assert_eq!(listed, names, "{when}: SHA256SUMS and the folder disagree");
        whole = true;
    }
    if let Some((_, m)) = files.iter().find(|(n, _)| n == "manifest.json") {
        let list: Vec<String> = serde_json::from_str(m.split_once(':').unwrap().1).unwrap();
        for n in &list {
            assert!(
                names.contains(&n.as_str()),
                "{when}: manifest.json lists {n}"
            );
        }
    }
    (tags.iter().next().map(|t| t.to_string()), whole)
}

/// Hidden things that are not the store's lock, `current` and its generation.
fn leftovers(folder: &Path) -> Vec<PathBuf> {
    let store = folder.join(STORE);
    let current = std::fs::read_link(store.join(CURRENT)).unwrap();
    let mut left = Vec::new();
    fn walk(d: &Path, skip: &Path, left: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if name.starts_with('.') || (meta.is_symlink() && !p.exists()) {
                left.push(p.clone());
            }
            if meta.is_dir() && !name.starts_with('.') {
                walk(&p, skip, left);
            }
        }
    }
    walk(folder, &store, &mut left);
    for e in std::fs::read_dir(&store).unwrap() {
        let n = e.unwrap().file_name();
        if n != CURRENT && n != LOCK && Path::new(&n) != current {
            // (legacy-SHA256SUMS is left only by a stopped conversion, which is not checked
            // for leftovers until the next publish.)
            left.push(store.join(n));
        }
    }
    left
}

fn names_of(set: Set) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(|(n, _)| n.to_string()).collect();
    v.extend(["manifest.json".to_string(), "SHA256SUMS".to_string()]);
    v.sort();
    v
}

fn seen_names(folder: &Path) -> Vec<String> {
    let mut files = Vec::new();
    visible(folder, folder, &mut files);
    let mut v: Vec<String> = files.into_iter().map(|(n, _)| n).collect();
    v.sort();
    v
}

/// Publishes NEW over OLD (laid out by `lay_old`), stopped after each step in turn; checks
/// the reader's view there (`strict`: always one whole set), after the clean-up and after a
/// third publish. Returns how many steps a whole publish has.
fn every_step(lay_old: fn(&Path), strict: bool) -> usize {
    let dead = |_: u32| false;
    for k in 0.. {
        let d = tempfile::tempdir().unwrap();
        let folder = d.path().join("out");
        std::fs::create_dir_all(&folder).unwrap();
        lay_old(&folder);
        let (staged, names) = stage(&folder, "new", NEW);
        let finished = publish_set(&staged, &folder, &names, &mut Steps::stop_after(k)).unwrap();
        let when = format!("stopped after {k} steps");
        let (tag, whole) = view(&folder, &when);
        if strict {
            assert!(whole, "{when}: no whole set");
            let want = if tag.as_deref() == Some("new") {
                NEW
            } else {
                OLD
            };
            assert_eq!(seen_names(&folder), names_of(want), "{when}");
        }
        if finished {
            assert_eq!(tag.as_deref(), Some("new"), "{when}");
            assert!(whole);
            assert_eq!(seen_names(&folder), names_of(NEW));
            // (A build's Staging removes its emptied folder on drop.)
            std::fs::remove_dir_all(staged.parent().unwrap()).unwrap();
            assert!(leftovers(&folder).is_empty(), "{:?}", leftovers(&folder));
        }

        // The next build starts: what the stopped one left goes, the view stays.
        clean_stale_with(&folder, &dead).unwrap();
        let after = view(&folder, &format!("{when}, cleaned"));
        assert_eq!(
            after,
            (tag.clone(), whole),
            "{when}: the clean-up changed the view"
        );
        if folder.join(STORE).join(CURRENT).exists() {
            assert!(
                leftovers(&folder).is_empty(),
                "{when}: {:?}",
                leftovers(&folder)
            );
        }
        assert!(!folder.join(format!("{STAGING_PREFIX}4000000-0")).exists());

        // And publishes its own set whole.
        publish_whole(&folder, "third", THIRD);
        assert_eq!(
            view(&folder, &format!("{when}, third")),
            (Some("third".into()), true)
        );
        assert_eq!(seen_names(&folder), names_of(THIRD));
        assert!(
            leftovers(&folder).is_empty(),
            "{when}: {:?}",
            leftovers(&folder)
        );
        if finished {
            return k;
        }
    }
    unreachable!()
}

#[test]
fn a_publish_stopped_at_any_step_leaves_one_whole_set() {
    let steps = every_step(|f| publish_whole(f, "old", OLD), true);
    // Move, links for three new names and a new folder, the swap (two), pruning one name, the
    // old generation.
    assert!(steps >= 7, "{steps}");
}

#[test]
fn the_first_publish_over_plain_files_never_leaves_a_describer_that_lies() {
    every_step(
        |f| {
            write_set(f, "old", OLD);
        },
        false,
    );
}

#[test]
fn a_folder_without_a_set_gets_one_and_the_next_build_keeps_only_it() {
    let d = tempfile::tempdir().unwrap();
    let folder = d.path();
    let (staged, names) = stage(folder, "new", NEW);
    assert!(publish_set(&staged, folder, &names, &mut Steps::all()).unwrap());
    assert_eq!(view(folder, "first"), (Some("new".into()), true));
    // Links are relative, through the store: the folder can be moved or copied whole.
    assert_eq!(
        std::fs::read_link(folder.join("sub/deep/x")).unwrap(),
        Path::new("../../.edgeimg/current/sub/deep/x")
    );
    // A killed build's temporaries, staging folder and a generation that never became current.
    std::fs::write(folder.join(".a.img.tmp-4000001-0"), "x").unwrap();
    std::fs::write(folder.join("sub/.x.tmp-4000001-3"), "x").unwrap();
    std::fs::create_dir_all(folder.join(".edgeimg/g-4000001-0-1/sub")).unwrap();
    std::fs::create_dir_all(folder.join(".edgeimg-spill-Ab12Cd")).unwrap();
    std::os::unix::fs::symlink(".edgeimg/current/gone", folder.join("gone")).unwrap();
    // A live process's temporary stays.
    let live = format!(".a.img.tmp-{}-9", std::process::id());
    std::fs::write(folder.join(&live), "x").unwrap();
    let c = clean_stale(folder).unwrap();
    assert_eq!(c.paths.len(), 6, "{:?}", c.paths);
    assert!(folder.join(&live).exists());
    std::fs::remove_file(folder.join(&live)).unwrap();
    assert!(leftovers(folder).is_empty(), "{:?}", leftovers(folder));
    assert_eq!(view(folder, "cleaned"), (Some("new".into()), true));
}

#[test]
fn a_locked_staging_folder_is_left_alone_and_a_dropped_one_removed() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Staging::begin(d.path()).unwrap();
    let set = s.new_set().unwrap();
    std::fs::write(set.join("f"), "x").unwrap();
    assert!(clean_stale(d.path()).unwrap().paths.is_empty());
    assert!(set.exists());
    let dir = s.path().to_path_buf();
    drop(s);
    assert!(!dir.exists());
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}

#[test]
fn names_that_leave_the_folder_are_refused() {
    for n in [
        "../x",
        "/etc/passwd",
        "a//b",
        ".edgeimg/current",
        "a/./b",
        "",
    ] {
        assert!(check_name(n).is_err(), "{n:?}");
    }
    assert!(check_name("node/default/index").is_ok());
}

#[test]
fn a_publish_that_fails_before_the_swap_takes_its_generation_and_links_back() {
    let d = tempfile::tempdir().unwrap();
    let folder = d.path().join("out");
    std::fs::create_dir_all(&folder).unwrap();
    publish_whole(&folder, "old", OLD);
    // A folder where the new set has a file: refused, after the links of earlier names.
    std::fs::create_dir_all(folder.join("sub/other/y")).unwrap();
    let (staged, names) = stage(&folder, "new", NEW);
    let err = publish_set(&staged, &folder, &names, &mut Steps::all()).unwrap_err();
    assert!(format!("{err:#}").contains("is a folder"), "{err:#}");
    std::fs::remove_dir_all(folder.join("sub/other")).unwrap();
    std::fs::remove_dir_all(staged.parent().unwrap()).unwrap();
    assert_eq!(view(&folder, "failed"), (Some("old".into()), true));
    assert_eq!(seen_names(&folder), names_of(OLD));
    assert!(leftovers(&folder).is_empty(), "{:?}", leftovers(&folder));
}
