//! Building and loading the pipeline library (`libaquabill.so`, the `aquabill` crate's
//! `cdylib`) from the shared target folder.
//!
//! [`load`] runs `cargo build -p aquabill --lib` in the repository this crate belongs to, showing
//! cargo's progress as the cell's output (nothing to do takes a fraction of a second), then opens
//! the library by its absolute path. Nothing depends on `LD_LIBRARY_PATH` or on how the kernel
//! was started: the path comes from `CARGO_TARGET_DIR`, which the `aquabill` kernel's launcher
//! sets (`scripts/env.sh`). Each cell's code has its own copy of this crate; they all find the one
//! library the process loaded, whose sessions outlive the cells.

use std::ffi::{CStr, CString, OsString, c_char, c_int, c_void};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

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

/// The library this cell's code talks to, opened on first use.
static LOADED: OnceLock<Result<Library, String>> = OnceLock::new();

/// Where the library is: `AQUABILL_LIBRARY` if set, else the shared target folder's profile.
pub(crate) fn path() -> Result<PathBuf, String> {
    path_from(
        std::env::var_os("AQUABILL_LIBRARY"),
        std::env::var_os("CARGO_TARGET_DIR"),
    )
}

/// [`path`] from the values of `AQUABILL_LIBRARY` and `CARGO_TARGET_DIR`.
fn path_from(library: Option<OsString>, target: Option<OsString>) -> Result<PathBuf, String> {
    if let Some(path) = library {
        return Ok(PathBuf::from(path));
    }
    let target = target.ok_or_else(|| {
        "CARGO_TARGET_DIR is not set, so the pipeline library cannot be found: open the notebook \
         with the kernel \"Rust (aquabill)\" (bash scripts/setup.sh installs it)"
            .to_owned()
    })?;
    let file = if cfg!(target_os = "macos") {
        "libaquabill.dylib"
    } else {
        "libaquabill.so"
    };
    Ok(PathBuf::from(target).join("debug").join(file))
}

/// The repository root: the parent of this crate's folder.
fn repository() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest)
}

/// Builds the library if its sources changed, printing cargo's progress as it goes; returns
/// whether anything was compiled. A library that this repository's last build vouched for and
/// whose sources have not changed since needs no cargo at all ([`is_fresh`]): cargo's own check
/// of the dependency graph takes 0.7 s of every run.
pub(crate) fn build() -> Result<bool, String> {
    let library = path()?;
    if is_fresh(&library, repository()) {
        return Ok(false);
    }
    let started = SystemTime::now();
    let compiled = cargo_build()?;
    vouch(&library, repository(), started);
    Ok(compiled)
}

/// The file beside the library that says which build vouched for it: the repository whose
/// sources cargo checked it against (through [`build`]), the time that build started, and the
/// library's modification time it left. The target folder is shared by every clone on the
/// machine, so a library can come from another clone's sources.
fn stamp_of(library: &Path) -> PathBuf {
    let mut name = library.as_os_str().to_owned();
    name.push(".checked-for");
    PathBuf::from(name)
}

/// What a stamp holds, one line each: the repository, the build's start and the library's
/// modification time, both in nanoseconds since the epoch.
fn stamp_text(repository: &Path, started: SystemTime, built: SystemTime) -> Option<Vec<u8>> {
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_nanos())
    };
    let mut text = repository.as_os_str().as_encoded_bytes().to_vec();
    text.extend(format!("\n{}\n{}\n", nanos(started)?, nanos(built)?).into_bytes());
    Some(text)
}

/// The start of the build a stamp's text records, if the stamp names `repository` and the
/// library's modification time is still `built`.
fn vouched_start(stamp: &[u8], repository: &Path, built: SystemTime) -> Option<SystemTime> {
    let rest = stamp.strip_prefix(repository.as_os_str().as_encoded_bytes())?;
    let mut lines = std::str::from_utf8(rest.strip_prefix(b"\n")?).ok()?.lines();
    let started = SystemTime::UNIX_EPOCH + Duration::from_nanos(lines.next()?.parse().ok()?);
    (stamp_text(repository, started, built)? == stamp).then_some(started)
}

/// Records that cargo, started at `started`, brought `library` up to date with `repository`'s
/// sources. Best effort: without the stamp, the next run asks cargo again.
fn vouch(library: &Path, repository: &Path, started: SystemTime) {
    let stamp = stamp_of(library);
    let mut partial = stamp.as_os_str().to_owned();
    partial.push(format!(".{}", std::process::id()));
    let partial = PathBuf::from(partial);
    let text = modified(library).and_then(|built| stamp_text(repository, started, built));
    let written = text
        .ok_or_else(|| std::io::Error::other("no library"))
        .and_then(|text| std::fs::write(&partial, text))
        .and_then(|()| std::fs::rename(&partial, &stamp));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&stamp);
    }
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

/// Whether `library` needs no build: its stamp names `repository`, nothing rewrote the library
/// since (another clone's build, `cargo test`), and every input of the build changed before
/// that build started (an edit made while it ran is newer): the manifest, the lock file and
/// every file and folder under `src/` (a folder's time changes when a file in it is added,
/// removed or renamed). Anything unreadable counts as changed, so cargo decides. Dependencies
/// come from the lock file; the toolchain is not an input here: a library built by an older
/// compiler still works, through the same C ABI.
fn is_fresh(library: &Path, repository: &Path) -> bool {
    fn newest(folder: &Path, newest_so_far: SystemTime) -> Option<SystemTime> {
        let mut newest_so_far = newest_so_far.max(modified(folder)?);
        for entry in std::fs::read_dir(folder).ok()? {
            let entry = entry.ok()?;
            let kind = entry.file_type().ok()?;
            newest_so_far = if kind.is_dir() {
                newest(&entry.path(), newest_so_far)?
            } else {
                newest_so_far.max(modified(&entry.path())?)
            };
        }
        Some(newest_so_far)
    }
    let (Some(built), Ok(stamp)) = (modified(library), std::fs::read(stamp_of(library))) else {
        return false;
    };
    let Some(started) = vouched_start(&stamp, repository, built) else {
        return false;
    };
    let inputs = modified(&repository.join("Cargo.toml"))
        .zip(modified(&repository.join("Cargo.lock")))
        .map(|(manifest, lock)| manifest.max(lock))
        .and_then(|newest_file| newest(&repository.join("src"), newest_file));
    inputs.is_some_and(|changed| changed < started)
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

fn open() -> Result<Library, String> {
    let path = path()?;
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
    use std::fs::{File, FileTimes};

    /// A repository with the library's inputs, each at `at` seconds after the epoch.
    fn repository_at(root: &Path, at: u64) -> std::io::Result<()> {
        std::fs::create_dir_all(root.join("src/table"))?;
        for file in ["Cargo.toml", "Cargo.lock", "src/lib.rs", "src/table/mod.rs"] {
            std::fs::write(root.join(file), file)?;
        }
        for path in [
            "Cargo.toml",
            "Cargo.lock",
            "src/lib.rs",
            "src/table/mod.rs",
            "src/table",
            "src",
        ] {
            touch(&root.join(path), at)?;
        }
        Ok(())
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn touch(path: &Path, seconds: u64) -> std::io::Result<()> {
        let time = at(seconds);
        File::open(path)?.set_times(FileTimes::new().set_modified(time).set_accessed(time))
    }

    #[test]
    fn the_library_is_fresh_only_when_this_repository_checked_it_since_every_change()
    -> std::io::Result<()> {
        let root = std::env::temp_dir().join(format!("aquabill-fresh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        repository_at(&root, 1_000)?;
        let library = root.join("libaquabill.so");
        assert!(!is_fresh(&library, &root), "no library yet");
        std::fs::write(&library, "")?;
        touch(&library, 2_000)?;
        assert!(
            !is_fresh(&library, &root),
            "a library no build of this repository vouched for"
        );
        vouch(&library, &root, at(1_500));
        assert!(is_fresh(&library, &root));
        // Seen from another clone (here: the same sources under another path), the stamp names
        // a repository that is not this one.
        assert!(
            !is_fresh(&library, &root.join("src/..")),
            "another clone's library"
        );
        // The library rewritten after the stamp (cargo test, another clone's build).
        touch(&library, 2_500)?;
        assert!(!is_fresh(&library, &root), "rewritten since it was checked");
        touch(&library, 2_000)?;
        assert!(is_fresh(&library, &root));
        // An edited source, a changed lock file, a removed module: each is newer than the
        // build's start, also when the change came while the build ran (before the library).
        for changed in ["src/table/mod.rs", "Cargo.lock", "src/table"] {
            for when in [3_000, 1_800] {
                touch(&root.join(changed), when)?;
                assert!(!is_fresh(&library, &root), "{changed} changed at {when}");
            }
            touch(&root.join(changed), 1_000)?;
            assert!(is_fresh(&library, &root), "{changed} restored");
        }
        // Sources that cannot be read: cargo decides.
        std::fs::remove_file(root.join("Cargo.lock"))?;
        assert!(!is_fresh(&library, &root), "no lock file");
        std::fs::remove_dir_all(&root)
    }

    #[test]
    fn the_library_is_found_in_the_shared_target_folder() {
        let found = path_from(None, Some("/cache/target".into()));
        let expected = if cfg!(target_os = "macos") {
            "/cache/target/debug/libaquabill.dylib"
        } else {
            "/cache/target/debug/libaquabill.so"
        };
        assert_eq!(found, Ok(PathBuf::from(expected)));
        let chosen = path_from(
            Some("/elsewhere/lib.so".into()),
            Some("/cache/target".into()),
        );
        assert_eq!(chosen, Ok(PathBuf::from("/elsewhere/lib.so")));
        // A kernel started without the project's environment: say which kernel to use.
        let missing = path_from(None, None);
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.contains("\"Rust (aquabill)\"")),
            "{missing:?}"
        );
    }
}
