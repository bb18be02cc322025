//! The C ABI the notebook calls through the `aquabill-notebook` facade crate.
//!
//! Why a C boundary: evcxr runs rust-analyzer over the whole dependency graph of every crate a
//! notebook imports, which for Polars and deltalake costs about 30 seconds per kernel start. The
//! facade crate has no dependencies; it links this library's `cdylib` and exchanges strings with
//! it, so the kernel only ever analyzes the facade.
//!
//! Protocol: [`aquabill_call`] takes a JSON request `{"op": ..., "session": n, "params": {...},
//! "customer": ...}` and returns `OK <session>\n<text>\u{1e}<html>` (a step's output as text and
//! as HTML, split by the ASCII record separator) or `ERR\n<message>`; the caller frees the answer
//! with [`aquabill_free`]. A session keeps one configured pipeline and its run in flight between
//! calls (`close` ends it). Panics are caught and returned as errors.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char};
use std::sync::Mutex;

use serde::Deserialize;

use crate::config::{Config, Params};
use crate::error::{Error, Result};
use crate::html;
use crate::report::Shown;
use crate::run::Run;
use crate::show;

/// A configured pipeline and the run in flight.
struct Session {
    config: Config,
    run: Option<Run>,
}

static SESSIONS: Mutex<BTreeMap<u64, Session>> = Mutex::new(BTreeMap::new());

#[derive(Deserialize)]
struct Request {
    op: String,
    #[serde(default)]
    session: u64,
    #[serde(default)]
    params: Option<OwnedParams>,
    #[serde(default)]
    customer: String,
    #[serde(default)]
    rebuild: bool,
}

#[derive(Deserialize)]
struct OwnedParams {
    input_root: String,
    output_root: String,
    checkpoint_location: String,
    billing_timezone: String,
    batch_cap: i64,
    clock_skew_minutes: i64,
}

/// Runs one request; see the module documentation for the protocol.
///
/// # Safety
///
/// `request` must point to a NUL-terminated string that stays valid during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aquabill_call(request: *const c_char) -> *mut c_char {
    let text = if request.is_null() {
        "ERR\nnull request".to_owned()
    } else {
        // SAFETY: the caller guarantees a valid NUL-terminated string.
        let bytes = unsafe { CStr::from_ptr(request) }.to_bytes().to_vec();
        match std::panic::catch_unwind(|| handle(&bytes)) {
            Ok(Ok((session, (text, html)))) => {
                format!("OK {session}\n{}\u{1e}{html}", text.replace('\u{1e}', " "))
            }
            Ok(Err(e)) => format!("ERR\n{e}"),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                format!("ERR\npanic in the pipeline: {msg}")
            }
        }
    };
    CString::new(text.replace('\0', "\u{FFFD}"))
        .unwrap_or_default()
        .into_raw()
}

/// Frees an answer of [`aquabill_call`].
///
/// # Safety
///
/// `answer` must come from [`aquabill_call`] and not have been freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aquabill_free(answer: *mut c_char) {
    if !answer.is_null() {
        // SAFETY: the pointer came from `CString::into_raw` in `aquabill_call`.
        drop(unsafe { CString::from_raw(answer) });
    }
}

/// A step's output as text and as HTML.
fn shown(output: &impl Shown) -> (String, String) {
    (output.to_string(), output.html())
}

fn handle(request: &[u8]) -> Result<(u64, (String, String))> {
    let request: Request = serde_json::from_slice(request)
        .map_err(|e| Error::Protocol(format!("bad request from the notebook: {e}")))?;
    let mut sessions = SESSIONS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if request.op == "configure" {
        let p = request.params.ok_or_else(|| missing("params"))?;
        let config = Config::new(&Params {
            input_root: &p.input_root,
            output_root: &p.output_root,
            checkpoint_location: &p.checkpoint_location,
            billing_timezone: &p.billing_timezone,
            batch_cap: p.batch_cap,
            clock_skew_minutes: p.clock_skew_minutes,
        })?;
        let id = sessions.keys().next_back().map_or(1, |k| k + 1);
        let output = shown(&config);
        sessions.insert(id, Session { config, run: None });
        return Ok((id, output));
    }
    let id = request.session;
    if request.op == "close" {
        sessions.remove(&id);
        return Ok((id, (String::new(), String::new())));
    }
    let session = sessions.get_mut(&id).ok_or_else(|| missing("session"))?;
    let no_run = || Error::Protocol("no run in progress: run the `plan` step first".to_owned());
    let output = match request.op.as_str() {
        "plan" => {
            // Planning again (a cell run twice) first ends this session's run in flight, which
            // releases its lock; the new plan resumes the same batch.
            session.run = None;
            let run = Run::start(&session.config)?;
            let output = shown(&run.plan_report());
            session.run = Some(run);
            output
        }
        "parse" => shown(&session.run.as_mut().ok_or_else(no_run)?.parse()?),
        "dedup" => shown(&session.run.as_mut().ok_or_else(no_run)?.dedup()?),
        "hourly" => shown(&session.run.as_mut().ok_or_else(no_run)?.write_hourly()?),
        "cumulative" => shown(
            &session
                .run
                .as_mut()
                .ok_or_else(no_run)?
                .write_cumulative()?,
        ),
        "finish" => shown(&session.run.take().ok_or_else(no_run)?.finish()?),
        "rebuild" => {
            session.run = None;
            if request.rebuild {
                shown(&crate::rebuild::rebuild(&session.config)?)
            } else {
                shown(&crate::rebuild::RebuildReport::default())
            }
        }
        "bills" => shown(&show::bills(&session.config)?),
        "chart" => match show::customer_month(&session.config, &request.customer)? {
            Some(month) => shown(&month),
            None => ("no usage yet".to_owned(), html::para("no usage yet")),
        },
        other => {
            return Err(Error::Protocol(format!(
                "unknown notebook operation `{other}`"
            )));
        }
    };
    Ok((id, output))
}

fn missing(what: &str) -> Error {
    Error::Protocol(format!("the notebook's request lacks a valid {what}"))
}
