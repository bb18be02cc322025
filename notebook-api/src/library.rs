//! Building and loading the pipeline library (`libaquabill.so`, the `aquabill` crate's
//! `cdylib`) from the shared target folder.
//!
//! Every clone on a machine builds into one target folder (`CARGO_TARGET_DIR`, set by the
//! `aquabill` kernel's launcher from `scripts/env.sh`), where the `cdylib` has one name: after
//! another clone's build, `<target>/debug/libaquabill.so` is that clone's code, and cargo, which
//! finds this clone's sources built, does not replace it. So the library is loaded from a copy
//! named by the digest of this clone's sources (`src/source_digest.rs`, which the library's
//! build script embeds in the library too): `<target>/aquabill-libs/libaquabill-<digest>.so`.
//! [`build`] computes the digest; if its copy exists there is nothing to do (no cargo at all);
//! otherwise it runs `cargo build -p aquabill --lib`, showing cargo's progress as the cell's
//! output, checks that the library cargo left carries this digest (if another clone's does, it
//! marks this clone's `src/lib.rs` changed and builds again), and copies it under its digest.
//! A kernel thus runs the code of its own clone, whatever other clones built since. Each cell's
//! code has its own copy of this crate; they all find the library the process loaded.

use std::ffi::{CStr, CString, OsString, c_char, c_int, c_void};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::SystemTime;

#[allow(dead_code)]
#[path = "../../src/source_digest.rs"]
mod source_digest;

use source_digest::{DIGEST_MARKER, source_digest};

/// The library's two entry points.
#[derive(Clone, Copy)]
pub(crate) struct Library {
    call: unsafe extern "C" fn(*const c_char) -> *mut c_char,
    free: unsafe extern "C" fn(*mut c_char),
}

#[link(name = "dl")]
unsafe extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
}

const RTLD_NOW: c_int = 2;
#[cfg(target_os = "macos")]
const RTLD_NOLOAD: c_int = 0x10;
#[cfg(not(target_os = "macos"))]
const RTLD_NOLOAD: c_int = 4;

/// Copies of the library kept in the copies' folder: older ones are removed.
const COPIES_KEPT: usize = 4;

/// The library this cell's code talks to, opened on first use.
static LOADED: OnceLock<Result<Library, String>> = OnceLock::new();

/// The library's file name.
fn file_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libaquabill.dylib"
    } else {
        "libaquabill.so"
    }
}

/// The shared target folder, from `CARGO_TARGET_DIR`.
fn target_from(target: Option<OsString>) -> Result<PathBuf, String> {
    target.map(PathBuf::from).ok_or_else(|| {
        "CARGO_TARGET_DIR is not set, so the pipeline library cannot be found: open the notebook \
         with the kernel \"Rust (aquabill)\" (bash scripts/setup.sh installs it)"
            .to_owned()
    })
}

/// Where cargo leaves the library, and the folder of its copies by digest.
fn places(target: &Path) -> (PathBuf, PathBuf) {
    (
        target.join("debug").join(file_name()),
        target.join("aquabill-libs"),
    )
}

/// The copy of the library built from sources with digest `digest`.
fn copy_of(copies: &Path, digest: &str) -> PathBuf {
    let (stem, extension) = file_name().split_once('.').unwrap_or((file_name(), "so"));
    copies.join(format!("{stem}-{digest}.{extension}"))
}

/// The repository root: the parent of this crate's folder.
fn repository() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest)
}

/// The library for this clone's sources: `AQUABILL_LIBRARY` if set, else its copy by digest,
/// built and copied first if there is none yet. Returns its path and whether cargo compiled.
pub(crate) fn build() -> Result<(PathBuf, bool), String> {
    if let Some(library) = std::env::var_os("AQUABILL_LIBRARY") {
        return Ok((PathBuf::from(library), false));
    }
    let target = target_from(std::env::var_os("CARGO_TARGET_DIR"))?;
    let digest = source_digest(repository()).map_err(|e| {
        format!(
            "reading the library's sources in {}: {e}",
            repository().display()
        )
    })?;
    let (built, copies) = places(&target);
    let own = copy_of(&copies, &digest);
    if own.is_file() {
        // In use: the newest, so that pruning after other clones' builds keeps it.
        let _ = mark_changed(&own);
        return Ok((own, false));
    }
    let mut compiled = false;
    for _ in 0..3 {
        compiled |= cargo_build()?;
        if copy_if_own(&built, &own, &digest)? {
            prune(&copies, &own);
            return Ok((own, compiled));
        }
        // Cargo found this clone's sources built, and the library it left is another clone's
        // (or another clone's build replaced it meanwhile): this clone's is built again.
        mark_changed(&repository().join("src").join("lib.rs"))?;
    }
    Err(format!(
        "the pipeline library cargo left in {} is not built from this clone's sources ({}, \
         digest {digest}), even after building again: another clone is building into the same \
         target folder; run the import cell again once it finished",
        built.display(),
        repository().display()
    ))
}

/// Whether `bytes` (a library file) carries `digest`.
fn carries(bytes: &[u8], digest: &str) -> bool {
    let wanted = format!("{DIGEST_MARKER}{digest};");
    bytes.windows(wanted.len()).any(|w| w == wanted.as_bytes())
}

/// Copies `built` to `own` (whole, then renamed) if it carries `digest`; false if it does not.
fn copy_if_own(built: &Path, own: &Path, digest: &str) -> Result<bool, String> {
    let io = |what: &str, path: &Path, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let bytes = std::fs::read(built).map_err(|e| io("reading", built, e))?;
    if !carries(&bytes, digest) {
        return Ok(false);
    }
    let folder = own.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder).map_err(|e| io("creating", folder, e))?;
    let mut partial = own.as_os_str().to_owned();
    partial.push(format!(".{}.partial", std::process::id()));
    let partial = PathBuf::from(partial);
    let written = std::fs::write(&partial, &bytes).and_then(|()| std::fs::rename(&partial, own));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(io("writing", own, e));
    }
    Ok(true)
}

/// Removes the oldest copies beyond [`COPIES_KEPT`] (never `keep`). A process that loaded a
/// removed copy keeps it: the file lives on until the process ends. Best effort.
fn prune(copies: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(copies) else {
        return;
    };
    let mut found: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != keep && !p.to_string_lossy().ends_with(".partial"))
        .filter_map(|p| Some((modified(&p)?, p)))
        .collect();
    found.sort();
    let extra = found.len().saturating_sub(COPIES_KEPT - 1);
    for (_, path) in found.into_iter().take(extra) {
        let _ = std::fs::remove_file(path);
    }
}

/// Sets `path`'s modification time to now, so that cargo builds its crate again.
fn mark_changed(path: &Path) -> Result<(), String> {
    std::fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .map_err(|e| format!("marking {} changed: {e}", path.display()))
}

/// Runs `cargo build -p aquabill --lib`, showing its progress; returns whether it compiled.
fn cargo_build() -> Result<bool, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    // Variables cargo sets for a crate being built or tested: inherited (as in this crate's own
    // tests), build scripts that watch them would see a change and rebuild half the graph.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if is_per_crate_variable(&name) {
            command.env_remove(name.as_ref());
        }
    }
    let mut child = command
        .args(["build", "-p", "aquabill", "--lib", "--color", "never"])
        .current_dir(repository())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start cargo ({}): {e}", cargo.to_string_lossy()))?;
    let mut compiled = false;
    let mut last_lines = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.map_err(|e| format!("reading cargo's output: {e}"))?;
            let trimmed = line.trim_start();
            compiled |= trimmed.starts_with("Compiling");
            // Progress goes to stdout: a cell's stderr means failure to the notebook runners.
            if !trimmed.starts_with("Finished") && !trimmed.starts_with("Blocking") {
                println!("{line}");
            }
            last_lines.push(line);
            if last_lines.len() > 40 {
                last_lines.remove(0);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the pipeline library failed ({status}):\n{}",
            last_lines.join("\n")
        ));
    }
    Ok(compiled)
}

/// A file's modification time, if it can be read.
fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
}

/// Whether cargo sets `name` for each crate it builds or runs (not a setting of the user's).
fn is_per_crate_variable(name: &str) -> bool {
    name == "OUT_DIR"
        || [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// The loaded library (opening it by its absolute path on first use).
pub(crate) fn get() -> Result<Library, String> {
    LOADED.get_or_init(open).clone()
}

/// The library this process loaded already (by the import cell, through another copy of this
/// crate), else this clone's copy by digest.
fn to_open() -> Result<PathBuf, String> {
    if let Some(library) = std::env::var_os("AQUABILL_LIBRARY") {
        return Ok(PathBuf::from(library));
    }
    let target = target_from(std::env::var_os("CARGO_TARGET_DIR"))?;
    let (_, copies) = places(&target);
    if let Ok(entries) = std::fs::read_dir(&copies) {
        for path in entries.flatten().map(|e| e.path()) {
            if is_loaded(&path) {
                return Ok(path);
            }
        }
    }
    let digest = source_digest(repository()).map_err(|e| e.to_string())?;
    Ok(copy_of(&copies, &digest))
}

/// Whether this process has loaded the library at `path`.
fn is_loaded(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; with RTLD_NOLOAD nothing is loaded, only looked up
    // (the reference it adds to a loaded library is never dropped: it is never unloaded).
    unsafe { !dlopen(c_path.as_ptr(), RTLD_NOW | RTLD_NOLOAD).is_null() }
}

/// The path of the library this process loaded (or will load).
pub(crate) fn loaded() -> Result<PathBuf, String> {
    to_open()
}

fn open() -> Result<Library, String> {
    let path = to_open()?;
    if !path.is_file() {
        return Err(format!(
            "the pipeline library {} does not exist: run the notebook's import cell (it builds \
             it), or `bash scripts/setup.sh`",
            path.display()
        ));
    }
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} contains NUL", path.display()))?;
    // SAFETY: a valid NUL-terminated path; the library is never unloaded, so the symbols stay
    // valid for the life of the process.
    unsafe {
        let handle = dlopen(c_path.as_ptr(), RTLD_NOW);
        if handle.is_null() {
            return Err(format!(
                "cannot load {}: {}",
                path.display(),
                last_dl_error()
            ));
        }
        let symbol = |name: &CStr| {
            let found = dlsym(handle, name.as_ptr());
            if found.is_null() {
                Err(format!(
                    "{} lacks {}: {}",
                    path.display(),
                    name.to_string_lossy(),
                    last_dl_error()
                ))
            } else {
                Ok(found)
            }
        };
        let call = symbol(c"aquabill_call")?;
        let free = symbol(c"aquabill_free")?;
        Ok(Library {
            call: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*const c_char) -> *mut c_char,
            >(call),
            free: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_char)>(free),
        })
    }
}

fn last_dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl call.
    unsafe {
        let e = dlerror();
        if e.is_null() {
            "unknown error".to_owned()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

impl Library {
    /// Sends one request, returns the answer's text.
    pub(crate) fn call(&self, request: &str) -> Result<String, String> {
        let request = CString::new(request).map_err(|_| "a parameter contains NUL".to_owned())?;
        // SAFETY: `request` is a valid NUL-terminated string for the duration of the call; the
        // answer is a NUL-terminated string owned by the library until `free`.
        unsafe {
            let raw = (self.call)(request.as_ptr());
            if raw.is_null() {
                return Err("the pipeline library returned nothing".to_owned());
            }
            let text = CStr::from_ptr(raw).to_string_lossy().into_owned();
            (self.free)(raw);
            Ok(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clone with the library's inputs.
    fn clone_at(root: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(root.join("src/table"))?;
        for file in [
            "Cargo.toml",
            "Cargo.lock",
            "build.rs",
            "src/lib.rs",
            "src/table/mod.rs",
        ] {
            std::fs::write(root.join(file), file)?;
        }
        Ok(())
    }

    #[test]
    fn the_digest_follows_the_sources_not_the_clone() -> std::io::Result<()> {
        let base = std::env::temp_dir().join(format!("aquabill-digest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (one, two) = (base.join("one"), base.join("two"));
        clone_at(&one)?;
        clone_at(&two)?;
        let digest = |root: &Path| source_digest(root);
        assert_eq!(digest(&one)?, digest(&two)?, "same sources, two clones");
        assert_eq!(digest(&one)?.len(), 32);
        let before = digest(&one)?;
        // An edit, a new module, a removed one, a changed lock file: each changes it.
        std::fs::write(one.join("src/table/mod.rs"), "edited")?;
        let edited = digest(&one)?;
        assert_ne!(edited, before);
        std::fs::write(one.join("src/table/read.rs"), "")?;
        let added = digest(&one)?;
        assert_ne!(added, edited);
        std::fs::remove_file(one.join("src/table/read.rs"))?;
        assert_eq!(digest(&one)?, edited);
        std::fs::write(one.join("Cargo.lock"), "other")?;
        assert_ne!(digest(&one)?, edited);
        // A file's bytes moved to another file is another source tree.
        std::fs::write(two.join("src/lib.rs"), "src/lib.rssrc/table/mod.rs")?;
        std::fs::write(two.join("src/table/mod.rs"), "")?;
        assert_ne!(digest(&two)?, before);
        std::fs::remove_dir_all(&base)
    }

    #[test]
    fn only_a_library_carrying_this_digest_is_copied() -> Result<(), String> {
        let base = std::env::temp_dir().join(format!("aquabill-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let io = |e: std::io::Error| e.to_string();
        std::fs::create_dir_all(&base).map_err(io)?;
        let (built, copies) = places(&base);
        std::fs::create_dir_all(built.parent().unwrap_or(&base)).map_err(io)?;
        let theirs = "0123456789abcdef0123456789abcdef";
        let ours = "fedcba9876543210fedcba9876543210";
        let library = |digest: &str| format!("\x7fELF...{DIGEST_MARKER}{digest};...");
        std::fs::write(&built, library(theirs)).map_err(io)?;
        let own = copy_of(&copies, ours);
        assert!(!copy_if_own(&built, &own, ours)?, "another clone's library");
        assert!(!own.exists());
        assert!(
            !carries(format!("{DIGEST_MARKER}{ours}").as_bytes(), ours),
            "no end mark"
        );
        std::fs::write(&built, library(ours)).map_err(io)?;
        assert!(copy_if_own(&built, &own, ours)?);
        assert_eq!(std::fs::read(&own).map_err(io)?, library(ours).into_bytes());
        assert!(
            own.ends_with(format!("aquabill-libs/libaquabill-{ours}.so"))
                || cfg!(target_os = "macos")
        );
        // Old copies beyond the few kept are removed, never the one in use.
        for i in 0..10 {
            std::fs::write(copy_of(&copies, &format!("{i:032}")), "").map_err(io)?;
        }
        prune(&copies, &own);
        let left = std::fs::read_dir(&copies).map_err(io)?.count();
        assert_eq!(left, COPIES_KEPT);
        assert!(own.exists());
        std::fs::remove_dir_all(&base).map_err(io)
    }

    #[test]
    fn the_target_folder_comes_from_the_kernel() {
        assert_eq!(
            target_from(Some("/cache/target".into())),
            Ok(PathBuf::from("/cache/target"))
        );
        let (built, copies) = places(Path::new("/cache/target"));
        assert_eq!(built, Path::new("/cache/target/debug").join(file_name()));
        assert_eq!(copies, Path::new("/cache/target/aquabill-libs"));
        // A kernel started without the project's environment: say which kernel to use.
        let missing = target_from(None);
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.contains("\"Rust (aquabill)\"")),
            "{missing:?}"
        );
    }
}
