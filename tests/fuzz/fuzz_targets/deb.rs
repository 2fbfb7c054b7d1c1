//! .deb ingestion (ar, control and data tar, compression): any bytes give an error or a tree
//! whose paths stay inside it, never a panic.
#![no_main]

use edgeimg::source::debian::deb::unpack_deb;
use edgeimg::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut f, data).expect("write");
    let mut tree = Tree::new();
    if unpack_deb(f.path(), &mut tree, &mut |_| true).is_ok() {
        for (p, _) in tree.iter() {
            assert!(
                !p.components().any(|c| c == ".." || c.is_empty()),
                "{p:?} leaves the tree"
            );
        }
    }
});
