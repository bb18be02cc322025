//! What `notebooks/hourly_billing.ipynb` imports: one method per pipeline step.
//!
//! This crate has no dependencies so that the notebook kernel, which analyzes every crate a cell
//! can see, starts in seconds. It builds and loads the `aquabill` library's `cdylib` at run time
//! ([`load_library`]) and calls it through a C ABI, with the requests and parameters defined once
//! in the library's `src/contract.rs` (this crate includes that file). Each step hands back its
//! report as text and HTML (Jupyter shows the HTML, logs and papermill the text).
//!
//! A step that fails stops the notebook: the message is printed and the kernel's child process
//! exits with status 1, which evcxr reports as a cell error. (A cell's `?` error would not do:
//! evcxr prints it on stderr, possibly after the cell is reported done, and replies "ok", so
//! papermill would carry on.) Nothing after the library's last commit was written, and a rerun of
//! the notebook resumes the same batch.

#![deny(missing_docs)]

use std::fmt;

// The library's own file: one definition of the parameters and the wire format. This crate sends
// requests and reads answers; the decoding half is the library's.
#[path = "../../src/contract.rs"]
#[allow(dead_code)]
mod contract;
mod library;

use contract::{Answer, Op, Request};
pub use contract::{PARAMETERS, Params};

/// A configured pipeline; each method runs one step of a run.
#[derive(Debug)]
pub struct Pipeline {
    session: u64,
    settings: Report,
}

/// What a step did, as text and as HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Plain text (logs, papermill).
    pub text: String,
    /// HTML (Jupyter).
    pub html: String,
}

/// A step failed; nothing after the failure point was committed.
pub struct StepError(pub String);

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StepError {}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Report {
    /// A text-only report.
    fn text(text: String) -> Self {
        let html = format!("<p>{}</p>", escape(&text));
        Self { text, html }
    }

    /// Shows the report in a notebook (evcxr calls this for a cell's last expression): Jupyter
    /// renders the HTML, papermill's log and text front ends print the text.
    pub fn evcxr_display(&self) {
        let mut out = format!(
            "EVCXR_BEGIN_CONTENT text/plain\n{}\nEVCXR_END_CONTENT",
            self.text
        );
        if !self.html.is_empty() {
            out += &format!(
                "\nEVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT",
                self.html
            );
        }
        println!("{out}");
    }
}

/// Builds the pipeline library if its sources changed (cargo's progress is the cell's output),
/// loads it, and says which one; stops the notebook if that fails. The notebook's import cell
/// calls it once; after the library's sources change, restart the kernel and run from the top.
pub fn load_library() -> Report {
    or_stop("loading the pipeline library", try_load_library())
}

/// [`load_library`], returning the error instead of stopping.
pub fn try_load_library() -> Result<Report, StepError> {
    let (own, compiled) = library::build().map_err(StepError)?;
    library::get().map_err(StepError)?;
    let loaded = library::loaded().map_err(StepError)?;
    let mut text = format!(
        "pipeline library {} ({}; protocol {})",
        loaded.display(),
        if compiled { "rebuilt" } else { "up to date" },
        contract::PROTOCOL
    );
    if loaded != own {
        text += &format!(
            "\nthis kernel loaded that library before the sources changed; restart the kernel to \
             load the one built from them now ({})",
            own.display()
        );
    }
    Ok(Report::text(text))
}

impl Pipeline {
    /// Validates the parameters (nothing is written) and configures a pipeline; stops the
    /// notebook if a parameter is invalid.
    pub fn new(p: &Params<'_>) -> Self {
        or_stop("validating the parameters", Self::try_new(p))
    }

    /// [`Pipeline::new`], returning the error instead of stopping.
    pub fn try_new(p: &Params<'_>) -> Result<Self, StepError> {
        let params = p.encode();
        let (session, settings) = call(Op::Configure, 0, &params)?;
        Ok(Self { session, settings })
    }

    /// The validated settings.
    pub fn settings(&self) -> Report {
        self.settings.clone()
    }

    fn step(&self, op: Op, argument: &str) -> Report {
        or_stop(
            op.as_str(),
            call(op, self.session, argument).map(|(_, report)| report),
        )
    }

    /// With the parameter `rebuild` true, recomputes every table from the input log (after a
    /// data error in the log was fixed); readers see each table's old or new version, never a
    /// mix. Otherwise does nothing.
    pub fn rebuild(&self) -> Report {
        self.step(Op::Rebuild, "")
    }

    /// Plans a run: the files no earlier run committed (or the unfinished run's files).
    pub fn plan(&self) -> Report {
        self.step(Op::Plan, "")
    }

    /// Reads and parses the planned files.
    pub fn parse(&self) -> Report {
        self.step(Op::Parse, "")
    }

    /// Applies the watermark and removes duplicates.
    pub fn dedup(&self) -> Report {
        self.step(Op::Dedup, "")
    }

    /// Updates `hourly_usage`.
    pub fn write_hourly(&self) -> Report {
        self.step(Op::Hourly, "")
    }

    /// Updates `cumulative_usage`.
    pub fn write_cumulative(&self) -> Report {
        self.step(Op::Cumulative, "")
    }

    /// Writes quarantine, metrics and dedup state, and advances the checkpoint.
    pub fn finish(&self) -> Report {
        self.step(Op::Finish, "")
    }

    /// Processes the new files the first batch left (a backlog), batch after batch.
    pub fn catch_up(&self) -> Report {
        self.step(Op::CatchUp, "")
    }

    /// The bills of the latest closed billing months and of the month to date (read-only).
    pub fn bills(&self) -> Report {
        self.step(Op::Bills, "")
    }

    /// A chart of the latest billing month of the customer the parameter `chart_customer` names
    /// (empty: the one with the largest running total): hourly usage and running total.
    pub fn chart(&self) -> Report {
        self.step(Op::Chart, "")
    }

    /// [`Pipeline::chart`] for `customer`.
    pub fn chart_of(&self, customer: &str) -> Report {
        self.step(Op::Chart, customer)
    }

    /// Runs a SQL query (Polars' SQL) over the output tables: `hourly_usage`,
    /// `cumulative_usage`, `monthly_bills`, `quarantine`, `run_metrics`. A filter on
    /// `usage_hour` (text `YYYY-MM-DDTHH`, UTC) reads only the hours it admits. Shows at most
    /// 100 rows and says when it cut some. A bad query shows its error here and stops nothing:
    /// the kernel and the pipeline keep their state.
    pub fn sql(&self, query: &str) -> Report {
        match call(Op::Sql, self.session, query) {
            Ok((_, report)) => report,
            // Shown as the cell's output, not as an error: a runner would stop the notebook.
            Err(e) => Report::text(format!("the query failed: {e}")),
        }
    }

    /// The output tables `sql` queries: version, data files, rows and columns.
    pub fn tables(&self) -> Report {
        self.step(Op::Tables, "")
    }

    /// Checks the tables without writing anything: the checkpoint against the tables, every
    /// run's accounting, the running totals against `hourly_usage`, the bills against the
    /// running totals. Stops the notebook, naming each disagreement, if anything disagrees.
    pub fn verify(&self) -> Report {
        self.step(Op::Verify, "")
    }

    /// How this batch's dedup ran and Polars' optimized plan of its aggregation, as the dedup
    /// and `hourly_usage` steps ran them (the steps themselves do not show them).
    pub fn explain(&self) -> Report {
        self.step(Op::Explain, "")
    }
}

impl Drop for Pipeline {
    /// Frees the run state the library keeps for this pipeline.
    fn drop(&mut self) {
        // Nothing useful can be done about a failure here; the session is simply left behind.
        let _ = call(Op::Close, self.session, "");
    }
}

/// The value, or the notebook stops: prints the error (stdout, which Jupyter shows reliably, and
/// stderr) and ends the kernel's child process with status 1, a cell error for evcxr.
fn or_stop<T>(step: &str, result: Result<T, StepError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => {
            use std::io::Write;
            let message = format!(
                "error in step `{step}`: {e}\nThe run stopped here. Nothing after the last \
                 commit was written; fix the cause and run the notebook again (it resumes the same \
                 batch)."
            );
            println!("{message}");
            eprintln!("{message}");
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            std::process::exit(1)
        }
    }
}

/// Sends one request to the library: its session and report, or its error.
fn call(op: Op, session: u64, argument: &str) -> Result<(u64, Report), StepError> {
    let library = library::get().map_err(StepError)?;
    let request = Request {
        op,
        session,
        argument,
    };
    let answer = library.call(&request.encode()).map_err(StepError)?;
    match Answer::decode(&answer) {
        Answer::Ok {
            session,
            text,
            html,
        } => Ok((session, Report { text, html })),
        Answer::Err(message) => Err(StepError(message)),
    }
}

/// `text` with `&`, `<` and `>` escaped for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library as the notebook meets it: built, loaded, configured, refusing bad input.
    #[test]
    fn the_library_loads_and_validates() -> Result<(), StepError> {
        let loaded = try_load_library()?;
        assert!(loaded.text.contains("libaquabill"), "{}", loaded.text);
        let bad = Params {
            input_root: "/no/such/folder",
            ..Params::default()
        };
        match Pipeline::try_new(&bad) {
            Err(StepError(message)) => assert!(message.contains("input_root"), "{message}"),
            Ok(_) => panic!("a missing input folder must be refused"),
        }
        Ok(())
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a> & b"), "&lt;a&gt; &amp; b");
    }
}
