//! Reading the usage log: which files a run takes ([`discover`]), and their lines as typed
//! records ([`parse`], one line at a time by [`line`]).

mod discover;
mod line;
mod parse;

#[cfg(test)]
pub use discover::FOLDER_PREFIX;
pub use discover::{Committed, HeldBack, PlannedFile, folder_hour, list_new_files};
pub use parse::{INGEST_HOUR, Parsed, SEQ, parse_files};
