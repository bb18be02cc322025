//! What `notebooks/hourly_billing.ipynb` imports: one method per pipeline step.
//!
//! This crate has no dependencies so that the notebook kernel, which analyzes every crate a cell
//! can see, starts in seconds. It calls the `aquabill` library through its C ABI (the library's
//! `cdylib`, found through `LD_LIBRARY_PATH`, which `scripts/env.sh` sets) and hands back each
//! step's report as text and HTML (Jupyter shows the HTML, logs and papermill the text).
//!
//! A step that fails stops the notebook: the message is printed and the kernel's child process
//! exits with status 1, which evcxr reports as a cell error. (A cell's `?` error would not do:
//! evcxr prints it on stderr, possibly after the cell is reported done, and replies "ok", so
//! papermill would carry on.) Nothing after the library's last commit was written, and a rerun of the
//! notebook resumes the same batch.

use std::ffi::{CStr, CString, c_char};
use std::fmt;

unsafe extern "C" {
    fn aquabill_call(request: *const c_char) -> *mut c_char;
    fn aquabill_free(answer: *mut c_char);
}

/// The notebook's parameters (its first cell). Mirrors `aquabill::Params`, which this crate
/// cannot import without giving up its point (having no dependencies).
#[derive(Debug, Clone)]
pub struct Params<'a> {
    /// Root of the usage log.
    pub input_root: &'a str,
    /// Folder of the output tables.
    pub output_root: &'a str,
    /// Checkpoint folder; empty means `<output_root>/_checkpoint`.
    pub checkpoint_location: &'a str,
    /// IANA time zone of the billing months.
    pub billing_timezone: &'a str,
    /// Most files per run; 0 means no cap.
    pub batch_cap: i64,
    /// Clock-skew tolerance for future-dated records, minutes.
    pub clock_skew_minutes: i64,
}

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
    /// Splits the library's `<text>\u{1e}<html>` answer.
    fn from_answer(answer: &str) -> Self {
        let (text, html) = answer.split_once('\u{1e}').unwrap_or((answer, ""));
        Self {
            text: text.to_owned(),
            html: html.to_owned(),
        }
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

impl Pipeline {
    /// Validates the parameters (nothing is written) and configures a pipeline; stops the
    /// notebook if a parameter is invalid.
    pub fn new(p: &Params<'_>) -> Self {
        or_stop("validating the parameters", Self::try_new(p))
    }

    /// [`Pipeline::new`], returning the error instead of stopping.
    pub fn try_new(p: &Params<'_>) -> Result<Self, StepError> {
        let request = format!(
            r#"{{"op":"configure","params":{{"input_root":{},"output_root":{},"checkpoint_location":{},"billing_timezone":{},"batch_cap":{},"clock_skew_minutes":{}}}}}"#,
            json_string(p.input_root),
            json_string(p.output_root),
            json_string(p.checkpoint_location),
            json_string(p.billing_timezone),
            p.batch_cap,
            p.clock_skew_minutes,
        );
        let (session, text) = call(&request)?;
        Ok(Self {
            session,
            settings: Report::from_answer(&text),
        })
    }

    /// The validated settings.
    pub fn settings(&self) -> Report {
        self.settings.clone()
    }

    fn step(&self, op: &str) -> Report {
        let answer = call(&format!(r#"{{"op":"{op}","session":{}}}"#, self.session));
        or_stop(op, answer.map(|(_, text)| Report::from_answer(&text)))
    }

    /// With `rebuild` true, recomputes every table from the input log (after a data error in
    /// the log was fixed); readers see each table's old or new version, never a mix. With
    /// `false`, does nothing.
    pub fn rebuild(&self, rebuild: bool) -> Report {
        let request = format!(
            r#"{{"op":"rebuild","session":{},"rebuild":{rebuild}}}"#,
            self.session
        );
        or_stop(
            "rebuild",
            call(&request).map(|(_, text)| Report::from_answer(&text)),
        )
    }

    /// Plans a run: the files no earlier run committed (or the unfinished run's files).
    pub fn plan(&self) -> Report {
        self.step("plan")
    }

    /// Reads and parses the planned files.
    pub fn parse(&self) -> Report {
        self.step("parse")
    }

    /// Applies the watermark and removes duplicates.
    pub fn dedup(&self) -> Report {
        self.step("dedup")
    }

    /// Updates `hourly_usage`.
    pub fn write_hourly(&self) -> Report {
        self.step("hourly")
    }

    /// Updates `cumulative_usage`.
    pub fn write_cumulative(&self) -> Report {
        self.step("cumulative")
    }

    /// Writes quarantine, metrics and dedup state, and advances the checkpoint.
    pub fn finish(&self) -> Report {
        self.step("finish")
    }

    /// The bills of the latest closed billing months and of the month to date (read-only).
    pub fn bills(&self) -> Report {
        self.step("bills")
    }

    /// A chart of `customer`'s latest billing month: hourly usage and running total; an empty
    /// `customer` picks the one with the largest running total (read-only).
    pub fn chart(&self, customer: &str) -> Report {
        let request = format!(
            r#"{{"op":"chart","session":{},"customer":{}}}"#,
            self.session,
            json_string(customer)
        );
        or_stop(
            "chart",
            call(&request).map(|(_, text)| Report::from_answer(&text)),
        )
    }
}

impl Drop for Pipeline {
    /// Frees the run state the library keeps for this pipeline.
    fn drop(&mut self) {
        // Nothing useful can be done about a failure here; the session is simply left behind.
        let _ = call(&format!(r#"{{"op":"close","session":{}}}"#, self.session));
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

/// Sends one request to the library; splits its `OK <session>` / `ERR` answer.
fn call(request: &str) -> Result<(u64, String), StepError> {
    let request =
        CString::new(request).map_err(|_| StepError("a parameter contains NUL".into()))?;
    // SAFETY: `request` is a valid NUL-terminated string for the duration of the call; the
    // answer is a NUL-terminated string owned by the library until `aquabill_free`.
    let answer = unsafe {
        let raw = aquabill_call(request.as_ptr());
        if raw.is_null() {
            return Err(StepError("the pipeline library returned nothing".into()));
        }
        let text = CStr::from_ptr(raw).to_string_lossy().into_owned();
        aquabill_free(raw);
        text
    };
    let (head, body) = answer.split_once('\n').unwrap_or((answer.as_str(), ""));
    match head.strip_prefix("OK ").and_then(|s| s.parse().ok()) {
        Some(session) => Ok((session, body.to_owned())),
        None => Err(StepError(body.to_owned())),
    }
}

/// A JSON string literal of `s`.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_split_into_text_and_html() {
        let r = Report::from_answer("3 rows\u{1e}<p>3 rows</p>");
        assert_eq!(
            (r.text.as_str(), r.html.as_str()),
            ("3 rows", "<p>3 rows</p>")
        );
        let r = Report::from_answer("text only");
        assert_eq!((r.text.as_str(), r.html.as_str()), ("text only", ""));
    }

    #[test]
    fn strings_are_valid_json() {
        assert_eq!(json_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(
            json_string("line\nnext\u{1}é"),
            "\"line\\u000anext\\u0001é\""
        );
    }
}
