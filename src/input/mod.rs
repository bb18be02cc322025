//! Reading the usage log: which files a run takes ([`discover`]), and their lines as typed
//! records ([`parse`], one line at a time by [`line`]).

mod discover;
mod line;
mod parse;

pub use discover::{Committed, FOLDER_PREFIX, HeldBack, PlannedFile, list_new_files};
pub use parse::{INGEST_HOUR, Parsed, SEQ, parse_files};
