//! Prints the digest of a checkout's library sources, as bills record it in `computed_by`
//! (`aquabill <version> source <digest>`): run it in a checkout of a commit to tell whether that
//! commit computed a bill.
//!
//! Usage: `cargo run --example source_digest [CHECKOUT]` (default: this one).

#[allow(dead_code)]
#[path = "../src/source_digest.rs"]
mod source_digest;

fn main() -> std::io::Result<()> {
    let root = std::env::args_os().nth(1).map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        Into::into,
    );
    println!("{}", source_digest::source_digest(&root)?);
    Ok(())
}
