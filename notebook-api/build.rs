//! Tells rustc where the aquabill library's shared object is: `AQUABILL_LIB_DIR` if set, else
//! the profile folder of the target directory this crate is built in (where `cargo build -p
//! aquabill` with the same settings puts it).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=AQUABILL_LIB_DIR");
    let dir = std::env::var_os("AQUABILL_LIB_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            // OUT_DIR is <target>/<triple>/<profile>/build/<crate>-<hash>/out.
            let out = PathBuf::from(std::env::var_os("OUT_DIR")?);
            out.ancestors().nth(3).map(PathBuf::from)
        });
    if let Some(dir) = dir {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    println!("cargo:rustc-link-lib=dylib=aquabill");
}
