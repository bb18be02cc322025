//! The library's error type: what stopped a run, which file or table, and what to do.

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
    /// Reading, writing or listing on object storage failed (after the client's retries).
    #[error("{action} {location}: {source}")]
    Storage {
        /// What was being done (`reading`, `writing`, ...).
        action: &'static str,
        /// The object or prefix (`s3://bucket/key`).
        location: String,
        /// The object store's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A checkpoint file (checkpoint, batch plan, rebuild marker) cannot be read as written.
    #[error(
        "checkpoint file {} is unreadable: {reason}. Nothing was changed; restore the file from \
         a backup, or rebuild the tables into a new output folder",
        path.display()
    )]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An input file changed after a run planned or committed it; input files are immutable.
    #[error(
        "input file {} changed after it was {when} ({before} bytes, now {now}); input files \
         must be immutable. If it was corrected on purpose, run the notebook once with \
         rebuild = true: it recomputes the tables from the log",
        path.display()
    )]
    InputChanged {
        /// The file.
        path: PathBuf,
        /// `committed` or `planned`.
        when: &'static str,
        /// Its size then.
        before: u64,
        /// Its size now.
        now: u64,
    },
    /// A rebuild of these tables was interrupted; ordinary runs wait until it is finished.
    #[error(
        "a rebuild of these tables was interrupted: run the notebook with rebuild = true to \
         finish it before ordinary runs go on"
    )]
    RebuildUnfinished,
    /// A rebuild was asked for while a batch is planned but not finished.
    #[error(
        "batch {batch} is planned but not finished: run the notebook once without rebuild to \
         finish it, then rebuild"
    )]
    BatchUnfinished {
        /// The unfinished batch.
        batch: i64,
    },
    /// The steps of a run were called out of order.
    #[error("the `{step}` step needs the `{needs}` step first")]
    StepOrder {
        /// The step called.
        step: &'static str,
        /// The step it needs.
        needs: &'static str,
    },
    /// The notebook facade sent a request this library cannot take.
    #[error("bad request from the notebook: {0}")]
    Request(String),
    /// A Delta table operation failed.
    #[error("delta table `{table}`: {source}")]
    Delta {
        /// Table name.
        table: String,
        /// The Delta (or object store) error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Writing a table's data file failed (a full disk, the store refused it); nothing of the
    /// batch was committed to the table.
    #[error(
        "writing a data file of table `{table}` under {location} failed: {source}. Nothing was \
         committed; fix the cause (free disk space, the store's permissions) and run again: the \
         next run finishes the batch"
    )]
    WriteData {
        /// Table name.
        table: String,
        /// The table's folder or URL.
        location: String,
        /// The Delta (or object store) error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Copying a batch's final days to the day tables failed, after the batch committed.
    #[error(
        "the batch is committed; copying its final days to the day tables failed: {source}. The \
         views read those days from the hour files until a run copies them"
    )]
    DayTables {
        /// What failed.
        source: Box<Error>,
    },
    /// A table exists but does not have the schema or partitioning this version writes.
    #[error("delta table `{table}` does not match the expected layout: {reason}")]
    TableLayout {
        /// Table name.
        table: String,
        /// What differs.
        reason: String,
    },
    /// A value read from, or about to be written to, a table breaks the table's schema (a null,
    /// a malformed hour, a column of another type).
    #[error("delta table `{table}`, column `{column}`: {reason}")]
    TableData {
        /// Table name.
        table: String,
        /// Column name.
        column: String,
        /// What is wrong.
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
    /// An hour index outside the calendar's range (a corrupted value).
    #[error("hour index {hour} is outside the calendar")]
    Hour {
        /// The hour index.
        hour: i64,
    },
    /// A worker thread panicked; nothing after the last commit was written.
    #[error("{what} panicked; nothing after the last commit was written")]
    Panicked {
        /// Which thread.
        what: String,
    },
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
    /// A table was built with another value of a parameter that gives its rows their meaning.
    #[error(
        "table `{table}` ({location}) was built with {parameter} = {stored}, and this run has \
         {parameter} = {given}: nothing was changed. Run with {parameter} = {stored}; or, to \
         use {given}, compute the tables afresh under a new output_root (and a new \
         checkpoint_location, if you set one): its first run takes the whole log; or recompute \
         these tables in place, closed bills included, with rebuild = true and \
         rewrite_closed_bills = true, which writes a report of every bill that changed. See \
         docs/OPERATIONS.md, \"Changing a parameter\""
    )]
    Pinned {
        /// Table name.
        table: &'static str,
        /// The table's folder or URL.
        location: String,
        /// The parameter.
        parameter: &'static str,
        /// The value the table stores.
        stored: String,
        /// The run's value.
        given: String,
    },
    /// The checkpoint and the tables record different batches: one of them was restored from
    /// an older copy, moved, or is missing.
    #[error(
        "the checkpoint ({checkpoint}) and the tables disagree: the checkpoint's last batch is \
         {last_batch}, and {tables}. Nothing was changed. A checkpoint restored from a copy older \
         than the tables, or tables older than the checkpoint (restored, moved, or under a \
         mistyped output_root), would lose readings. Restore the checkpoint folder and the tables \
         from the same backup, or point output_root and checkpoint_location where both are; see \
         docs/OPERATIONS.md, \"Restoring a backup\""
    )]
    Disagree {
        /// The checkpoint folder.
        checkpoint: String,
        /// The checkpoint's last batch.
        last_batch: String,
        /// What each table holds that disagrees.
        tables: String,
    },
    /// Another run changed shared state while this one worked (two runs overlapped); this run
    /// stopped before writing anything that depends on it.
    #[error(
        "another run changed {what}. This run stopped there and wrote nothing more; run again \
         once the other run finished (see docs/OPERATIONS.md, \"Two hosts\")"
    )]
    Conflict {
        /// What changed.
        what: String,
    },
    /// The read-only check of the tables found disagreements (each named).
    #[error("the tables disagree; nothing was changed:\n{0}")]
    Disagreements(String),
    /// A run's own accounting does not add up; nothing after the check was committed.
    #[error("accounting check failed: {0}")]
    Accounting(String),
    /// Dedup refused its input (a bug, never bad data: nothing was written).
    #[error("dedup: {0}")]
    Dedup(String),
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

    pub(crate) fn polars(
        step: &'static str,
    ) -> impl Fn(polars::prelude::PolarsError) -> Self + Copy {
        move |source| Self::Polars { step, source }
    }

    pub(crate) fn table_data(table: &str, column: &str, reason: impl Into<String>) -> Self {
        Self::TableData {
            table: table.to_owned(),
            column: column.to_owned(),
            reason: reason.into(),
        }
    }
}
