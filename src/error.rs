//! The library's error type.

use std::path::PathBuf;

/// Everything that can stop a run. Bad *records* are not errors: they go to the quarantine table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A notebook parameter is invalid; nothing has been written.
    #[error("invalid parameter `{name}`: {reason}")]
    Parameter {
        /// Parameter name as written in the notebook's first cell.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a local file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`reading`, `writing`, ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The checkpoint is unreadable or contradicts the input log.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A Delta table operation failed.
    #[error("delta table `{table}`: {source}")]
    Delta {
        /// Table name.
        table: String,
        /// The deltalake error.
        source: Box<deltalake::DeltaTableError>,
    },
    /// A table exists but does not have the schema or partitioning this version writes.
    #[error("delta table `{table}` does not match the expected layout: {reason}")]
    TableLayout {
        /// Table name.
        table: String,
        /// What differs.
        reason: String,
    },
    /// A Polars query failed.
    #[error("{step}: {source}")]
    Polars {
        /// The pipeline step.
        step: &'static str,
        /// The Polars error.
        source: polars::prelude::PolarsError,
    },
    /// Converting between Polars and Arrow failed.
    #[error("arrow conversion for `{table}`: {reason}")]
    Arrow {
        /// Table name.
        table: String,
        /// What went wrong.
        reason: String,
    },
    /// The steps of a run were called out of order, or the notebook sent a malformed request.
    #[error("{0}")]
    Protocol(String),
    /// Another run holds the tables' run lock.
    #[error(
        "another run is working on these tables ({holder}; lock {}): this run changed nothing. \
         Let it finish; the lock is released when that process ends, however it ends",
        path.display()
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as the holder wrote it.
        holder: String,
    },
    /// A run's own accounting does not add up; nothing after the check was committed.
    #[error("accounting check failed: {0}")]
    Accounting(String),
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn delta(table: &str, source: deltalake::DeltaTableError) -> Self {
        Self::Delta {
            table: table.to_owned(),
            source: Box::new(source),
        }
    }

    pub(crate) fn polars(
        step: &'static str,
    ) -> impl Fn(polars::prelude::PolarsError) -> Self + Copy {
        move |source| Self::Polars { step, source }
    }
}
