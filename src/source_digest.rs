//! The digest of the library's sources: every file a build of the `aquabill` library reads
//! from its clone (the manifest, the lock file, the build script and the `.rs` files under
//! `src/`, hidden files left out).
//! Written once and included as is by the two sides that must agree on it: the library's build
//! script, which embeds the digest in the library it builds, and the notebook facade
//! (`notebook-api`), which loads only a library carrying its own clone's digest. Plain `std`, so
//! that the dependency-free facade can include it; not a module of the library itself.

use std::path::Path;

/// The files outside `src/` a build reads, relative to the clone's root.
const TOP_FILES: [&str; 3] = ["Cargo.toml", "Cargo.lock", "build.rs"];

/// What a library file carries before its digest (and `;` after it), so the facade can find it.
pub const DIGEST_MARKER: &str = "aquabill-source-digest:";

/// The digest (32 hex digits) of the clone rooted at `root`: FNV-1a (128 bits) over each input
/// file's path, length and bytes, in the order of their paths. Not a defence against anyone;
/// an identity that changes with every edit, whichever clone made it.
pub fn source_digest(root: &Path) -> std::io::Result<String> {
    let mut files: Vec<String> = TOP_FILES.iter().map(|f| (*f).to_owned()).collect();
    sources_under(root, "src", &mut files)?;
    files.sort();
    let mut hash = Fnv::default();
    for file in &files {
        let bytes = std::fs::read(root.join(file))?;
        hash.write(file.as_bytes());
        hash.write(&[0]);
        hash.write(&(bytes.len() as u64).to_le_bytes());
        hash.write(&bytes);
    }
    Ok(format!("{:032x}", hash.0))
}

/// Appends the files under `root/rel` (relative paths with `/`) to `out`.
fn sources_under(root: &Path, rel: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{rel}/{name}");
        if name.starts_with('.') {
            // An editor's swap or backup file: not a source.
        } else if entry.file_type()?.is_dir() {
            sources_under(root, &path, out)?;
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// FNV-1a, 128 bits.
struct Fnv(u128);

impl Default for Fnv {
    fn default() -> Self {
        Self(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self
                .0
                .wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
        }
    }
}
