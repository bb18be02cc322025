//! Embeds the digest of the library's sources (`src/source_digest.rs`) in the library, as
//! `AQUABILL_SOURCE_DIGEST`: the notebook facade loads a library only if it carries its own
//! clone's digest, since every clone on a machine builds into one shared target folder.

#[allow(dead_code)]
#[path = "src/source_digest.rs"]
mod source_digest;

fn main() {
    let root = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    match source_digest::source_digest(&root) {
        Ok(digest) => println!("cargo:rustc-env=AQUABILL_SOURCE_DIGEST={digest}"),
        Err(e) => {
            println!("cargo:warning=cannot read the library's sources for their digest: {e}");
            std::process::exit(1);
        }
    }
    for input in ["src", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={input}");
    }
}
