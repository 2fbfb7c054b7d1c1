//! configure interrupted at every write, through a test-only `Fault` writer under the FAT
//! volume's I/O: after N writes it fails the next one (which then never reaches the file) and
//! logs every write and barrier, so the order of the switch is checked too. The image is a
//! small synthetic one: a GPT from edgeimg's partition plan and a FAT32 from edgeimg's writer.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::rc::Rc;

use super::personalize::{apply, NODE_DIR};
use crate::disk::{write_table, PartRole, PartType, PartitionPlan, PartitionSpec, TableKind};
use crate::fs::fat::{write_fat32, FatParams, FatVolume};
use crate::node::NodeConfig;
use crate::tree::Tree;
use crate::util::test_tools::{require_tool, run_tool_status};

const MIB: u64 = 1024 * 1024;

#[derive(Clone, Debug, PartialEq)]
enum Event {
    Write { at: u64, len: usize },
    Barrier,
}

/// Passes `left` writes through, then fails every further one without touching the file.
struct Fault<W> {
    inner: W,
    left: usize,
    log: Rc<RefCell<Vec<Event>>>,
}

impl<W: Write + Seek> Write for Fault<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other(
                "injected fault: this write did not happen",
            ));
        }
        self.left -= 1;
        let at = self.inner.stream_position()?;
        self.log
            .borrow_mut()
            .push(Event::Write { at, len: buf.len() });
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Read> Read for Fault<W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<W: Seek> Seek for Fault<W> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

fn render(toml: &str, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let token = dir.join("token");
    std::fs::write(&token, format!("{}\n", crate::node::tests::TEST_TOKEN)).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let path = dir.join("node.toml");
    std::fs::write(&path, toml.replace("TOKEN", token.to_str().unwrap())).unwrap();
    NodeConfig::from_toml_file(&path)
        .unwrap()
        .render()
        .unwrap()
        .files
}

/// A GPT image with a 40 MiB edgeimg boot partition holding boot files and `node`'s files.
/// Returns (image, partition offset, partition size).
fn synthetic(dir: &Path, node: &[(String, Vec<u8>)]) -> (std::path::PathBuf, u64, u64) {
    let specs = [
        PartitionSpec {
            role: PartRole::Boot,
            name: "boot".into(),
            ptype: PartType::Esp,
            size: 40 * MIB,
            bootable: false,
        },
        PartitionSpec {
            role: PartRole::Root(crate::disk::layout::Slot::A),
            name: "root".into(),
            ptype: PartType::LinuxRootX86_64,
            size: 4 * MIB,
            bootable: false,
        },
    ];
    let plan = PartitionPlan::new(TableKind::Gpt, &specs, b"image-tests").unwrap();
    let boot = plan.get(PartRole::Boot).clone();
    let image = dir.join("card.img");
    let mut f = File::create(&image).unwrap();
    f.set_len(plan.disk_size).unwrap();
    write_table(&plan, &mut f).unwrap();
    let mut tree = Tree::new();
    tree.add_file("EFI/BOOT/BOOTX64.EFI", vec![0x4d; 2000], 0o644)
        .unwrap();
    tree.add_file(crate::boot::uefi::ENTRY, "title t\nlinux /vmlinuz\n", 0o644)
        .unwrap();
    tree.add_file("vmlinuz", vec![0x7f; 5000], 0o644).unwrap();
    for (p, c) in node {
        tree.add_file(p, c.clone(), 0o644).unwrap();
    }
    let params = FatParams {
        size: boot.size(),
        volume_id: 7,
        label: "EDGEIMG".into(),
        hidden_sectors: boot.start_lba as u32,
        mtime: 1_700_000_000,
    };
    write_fat32(&tree, &params, &mut f, boot.offset()).unwrap();
    (image, boot.offset(), boot.size())
}

/// Every file under edgeimg/, read through the checked walk.
fn node_files(image: &Path, offset: u64, size: u64) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let f = File::open(image).unwrap();
    let mut vol = FatVolume::open_partition(&f, offset, size).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for e in vol.walk(NODE_DIR).map_err(|e| e.to_string())? {
        if !e.is_dir {
            let data = vol.read_file(&e.path).map_err(|e| e.to_string())?.unwrap();
            out.insert(e.path, data);
        }
    }
    Ok(out)
}

/// `fsck.fat`'s verdict on the partition: Ok(None) clean, Ok(Some(n)) only `n` unused
/// clusters (which `-a` then frees, leaving it clean), Err(text) anything else.
fn fsck(image: &Path, offset: u64, size: u64, scratch: &Path) -> Result<Option<u32>, String> {
    let mut src = File::open(image).unwrap();
    let mut dst = File::create(scratch).unwrap();
    dst.set_len(size).unwrap();
    src.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    for at in (0..size).step_by(buf.len()) {
        src.read_exact(&mut buf).unwrap();
        if buf.iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(at)).unwrap();
            dst.write_all(&buf).unwrap();
        }
    }
    drop(dst);
    let part = scratch.to_str().unwrap();
    let (ok, text) = run_tool_status("fsck.fat", &["-n", part]);
    let lines: Vec<&str> = text
        .lines()
        .skip(1) // the version
        .filter(|l| !l.starts_with(part) && !l.starts_with("Free cluster summary uninitialized"))
        .collect();
    if ok && lines.is_empty() {
        return Ok(None);
    }
    let lost = lines.iter().find_map(|l| {
        l.strip_prefix("Reclaimed ")?
            .split(' ')
            .next()?
            .parse::<u32>()
            .ok()
    });
    let rest: Vec<&&str> = lines
        .iter()
        .filter(|l| {
            !l.starts_with("Reclaimed ")
                && !l.starts_with("Leaving filesystem unchanged")
                && !l.trim().is_empty()
        })
        .collect();
    match lost {
        Some(n) if rest.is_empty() => {
            run_tool_status("fsck.fat", &["-a", part]);
            let (ok, again) = run_tool_status("fsck.fat", &["-n", part]);
            if ok && again.lines().count() <= 2 {
                Ok(Some(n))
            } else {
                Err(format!("after fsck.fat -a:\n{again}"))
            }
        }
        _ => Err(text),
    }
}

/// The record `edgeimg update` leaves on a card it armed (slot.sh's format).
static TRIAL: std::sync::LazyLock<(String, Vec<u8>)> = std::sync::LazyLock::new(|| {
    (
        "edgeimg/update/trial".to_string(),
        b"b 2 1 offline\n".to_vec(),
    )
});

#[test]
fn configure_keeps_the_update_state_and_refuses_what_is_not_it() {
    let dir = tempfile::tempdir().unwrap();
    let old = render("hostname = \"old\"\n[time]\nntp = []\n", dir.path());
    let new = render("hostname = \"new\"\n[time]\nntp = []\n", dir.path());
    let result = b"v2 failed (it did not come up)\n".to_vec();
    let mut on_card = old.clone();
    on_card.push(TRIAL.clone());
    on_card.push(("edgeimg/update/result".into(), result.clone()));
    let (image, offset, size) = synthetic(dir.path(), &on_card);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let applied = apply(&file, offset, size, "card.img", &new, &mut || Ok(())).unwrap();
    let files = node_files(&image, offset, size).unwrap();
    assert_eq!(files.get(&TRIAL.0), Some(&TRIAL.1), "{:?}", files.keys());
    assert_eq!(files.get("edgeimg/update/result"), Some(&result));
    assert_eq!(files.len(), new.len() + 2, "{:?}", files.keys());
    assert_eq!(applied.removed.len(), old.len());
    assert_eq!(applied.kept.len(), 2);

    // A folder inside update/ is not slot.sh's: refused, nothing changed.
    let mut odd = old.clone();
    odd.push(("edgeimg/update/mine/notes".into(), b"x".to_vec()));
    let (image, offset, size) = synthetic(dir.path(), &odd);
    let before = std::fs::read(&image).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let err = apply(&file, offset, size, "card.img", &new, &mut || Ok(()))
        .err()
        .expect("a foreign folder under edgeimg/update is refused");
    assert!(
        format!("{err:#}").contains("edgeimg/update/mine is not a folder edgeimg writes there"),
        "{err:#}"
    );
    assert_eq!(
        std::fs::read(&image).unwrap(),
        before,
        "nothing was changed"
    );
}

#[test]
fn configure_interrupted_at_every_write_leaves_the_old_or_the_new_config() {
    require_tool("fsck.fat");
    let dir = tempfile::tempdir().unwrap();
    let old = render(
        "hostname = \"old-node\"\nrun_cmd = [\"echo old\"]\n[k0s]\nrole = \"worker\"\n\
         token_file = \"TOKEN\"\n[time]\nntp = []\n[[files]]\npath = \"/etc/a\"\ncontent = \"a\"\n",
        dir.path(),
    );
    let mut new = render(
        &format!(
            "hostname = \"new-node\"\nboot_cmd = [\"echo new\"]\n[time]\nntp = []\n\
             [[files]]\npath = \"/etc/b\"\ncontent = \"{}\"\n",
            "b".repeat(5000)
        ),
        dir.path(),
    );
    // A per-MAC folder too, as configure renders it.
    for (p, c) in render("hostname = \"rack-a\"\n[time]\nntp = []\n", dir.path()) {
        let rest = p.strip_prefix("edgeimg/").unwrap();
        new.push((format!("edgeimg/nodes/52-54-00-0e-00-0a/{rest}"), c));
    }
    // The card is on trial (an offline `edgeimg update`): its record must survive configure,
    // and every interruption of it.
    let mut old = old;
    old.push(TRIAL.clone());
    let (image, offset, size) = synthetic(dir.path(), &old);
    let pristine = std::fs::read(&image).unwrap();
    let old_files: BTreeMap<String, Vec<u8>> = old.into_iter().collect();
    let mut new_files: BTreeMap<String, Vec<u8>> = new.iter().cloned().collect();
    new_files.insert(TRIAL.0.clone(), TRIAL.1.clone());
    assert_eq!(node_files(&image, offset, size).unwrap(), old_files);

    let run = |limit: usize| {
        std::fs::write(&image, &pristine).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        let io = Fault {
            inner: &file,
            left: limit,
            log: log.clone(),
        };
        let mut barrier = || {
            log.borrow_mut().push(Event::Barrier);
            Ok(())
        };
        let result = apply(io, offset, size, "card.img", &new, &mut barrier);
        let events = log.borrow().clone();
        (result, events)
    };

    // The whole run, and the order of its writes.
    let (result, events) = run(usize::MAX);
    let applied = result.unwrap();
    assert_eq!(applied.kept, std::slice::from_ref(&TRIAL.0));
    assert!(!applied.removed.contains(&TRIAL.0), "{:?}", applied.removed);
    assert_eq!(node_files(&image, offset, size).unwrap(), new_files);
    assert_eq!(fsck(&image, offset, size, &dir.path().join("p")), Ok(None));
    let phases: Vec<Vec<(u64, usize)>> = events
        .split(|e| *e == Event::Barrier)
        .map(|p| {
            p.iter()
                .map(|e| match e {
                    Event::Write { at, len } => (*at - offset, *len),
                    Event::Barrier => unreachable!(),
                })
                .collect()
        })
        .collect();
    assert_eq!(phases.len(), 5, "four barriers: {events:?}");
    assert!(phases[4].is_empty(), "nothing after the last barrier");
    // Phase 1 writes only data clusters, free in the pristine volume.
    let pristine_vol = FatVolume::open(std::io::Cursor::new(pristine.clone()), offset).unwrap();
    let data_start = 32 * 512 + 2 * 512 * u64::from(le32(&pristine[offset as usize + 36..]));
    for (at, len) in &phases[0] {
        assert!(
            *at >= data_start,
            "phase 1 wrote at {at}, before the data region"
        );
        let first = (at - data_start) / 512 + 2;
        let last = (at + *len as u64 - 1 - data_start) / 512 + 2;
        for c in first..=last {
            assert!(
                pristine_vol.is_free(c as u32),
                "phase 1 wrote into cluster {c}, which was in use"
            );
        }
    }
    // Phase 2: the FATs (one write), FSInfo. Phase 3: one 32-byte entry.
    assert_eq!(phases[1].len(), 2, "{:?}", phases[1]);
    assert_eq!(phases[1][1], (512, 512), "FSInfo");
    assert_eq!(phases[2].len(), 1, "{:?}", phases[2]);
    assert_eq!(phases[2][0].1, 32, "the switch is one directory entry");
    assert!(
        phases[2][0].0 >= data_start && phases[2][0].0 < data_start + 512,
        "in the root"
    );
    let total = events.iter().filter(|e| **e != Event::Barrier).count();

    // Every interruption.
    let mut lost_points = 0;
    for n in 0..total {
        let (result, _) = run(n);
        let err = format!(
            "{:#}",
            result.err().expect("an interrupted configure fails")
        );
        assert!(err.contains("injected fault"), "{err}");
        let files = node_files(&image, offset, size)
            .unwrap_or_else(|e| panic!("after {n} writes: unreadable: {e}"));
        let which = if files == old_files {
            "old"
        } else if files == new_files {
            "new"
        } else {
            panic!(
                "after {n} writes: neither the old nor the new files: {:?}",
                files.keys()
            )
        };
        match fsck(&image, offset, size, &dir.path().join("p")) {
            Ok(None) => {}
            Ok(Some(_)) => lost_points += 1,
            Err(text) => panic!("after {n} writes ({which} files): fsck.fat:\n{text}"),
        }
        let says = if which == "old" {
            "old files"
        } else {
            "new files"
        };
        assert!(
            err.contains(says) || err.contains("either the old or the new files"),
            "after {n} writes the error does not say what is on the card: {err}"
        );
    }
    eprintln!(
        "configure interrupted after each of 0..{total} writes: old or new config every time, \
         fsck.fat clean but for unused clusters at {lost_points}"
    );
    // Only the moments between allocating and switching, and between switching and freeing.
    assert!(
        lost_points <= 4,
        "{lost_points} interruptions left unused clusters"
    );
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
