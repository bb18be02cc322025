//! The C ABI the notebook calls through the `aquabill-notebook` facade crate.
//!
//! Why a C boundary: evcxr runs rust-analyzer over the whole dependency graph of every crate a
//! notebook imports, which for Polars and deltalake costs about 30 seconds per kernel start. The
//! facade crate has no dependencies; it links this library's `cdylib` and exchanges strings with
//! it, so the kernel only ever analyzes the facade.
//!
//! Protocol (`src/contract.rs`, shared with the facade): [`aquabill_call`] takes a
//! [`Request`] and returns an [`Answer`] (a step's output as text and HTML, or an error); the
//! caller frees the answer with [`aquabill_free`]. A session keeps one configured pipeline and
//! its run in flight between calls (`close` ends it). Panics are caught and returned as errors.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char};
use std::sync::Mutex;

use crate::config::Config;
use crate::contract::{Answer, Op, Params, Request};
use crate::error::{Error, Result};
use crate::input::PlannedFile;
use crate::present::{Settings, html, shown};
use crate::rebuild::{RebuildReport, rebuild};
use crate::run::{QueryPlans, Run, catch_up};
use crate::view;

/// A configured pipeline and the run in flight.
struct Session {
    config: Config,
    run: Option<Run>,
    /// The files the run's first batch left for its later batches.
    later: Vec<PlannedFile>,
    /// The batch's query plans, for `explain`.
    plans: QueryPlans,
}

static SESSIONS: Mutex<BTreeMap<u64, Session>> = Mutex::new(BTreeMap::new());

/// Runs one request; see the module documentation for the protocol.
///
/// # Safety
///
/// `request` must point to a NUL-terminated string that stays valid during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aquabill_call(request: *const c_char) -> *mut c_char {
    crate::memory::limit_arenas();
    let answer = if request.is_null() {
        Answer::Err("null request".to_owned())
    } else {
        // SAFETY: the caller guarantees a valid NUL-terminated string.
        let bytes = unsafe { CStr::from_ptr(request) }.to_bytes().to_vec();
        match std::panic::catch_unwind(|| handle(&bytes)) {
            Ok(Ok((session, (text, html)))) => Answer::Ok {
                session,
                text,
                html,
            },
            Ok(Err(e)) => Answer::Err(e.to_string()),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                Answer::Err(format!("panic in the pipeline: {msg}"))
            }
        }
    };
    CString::new(answer.encode().replace('\0', "\u{FFFD}"))
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

fn handle(request: &[u8]) -> Result<(u64, (String, String))> {
    let request = std::str::from_utf8(request).map_err(|e| Error::Request(e.to_string()))?;
    let request = Request::decode(request).map_err(Error::Request)?;
    let mut sessions = SESSIONS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if request.op == Op::Configure {
        let params = Params::decode(request.argument).map_err(Error::Request)?;
        let config = Config::new(&params)?;
        let id = sessions.keys().next_back().map_or(1, |k| k + 1);
        let output = shown(&Settings(&config));
        sessions.insert(
            id,
            Session {
                config,
                run: None,
                later: Vec::new(),
                plans: QueryPlans::default(),
            },
        );
        return Ok((id, output));
    }
    let id = request.session;
    if request.op == Op::Close {
        sessions.remove(&id);
        return Ok((id, (String::new(), String::new())));
    }
    let session = sessions.get_mut(&id).ok_or_else(|| missing("session"))?;
    Ok((id, step(session, request.op, request.argument)?))
}

/// One step of a session's pipeline.
fn step(session: &mut Session, op: Op, argument: &str) -> Result<(String, String)> {
    let no_run = |step| Error::StepOrder {
        step,
        needs: "plan",
    };
    Ok(match op {
        Op::Plan => {
            // Planning again (a cell run twice) first ends this session's run in flight, which
            // releases its lock; the new plan resumes the same batch.
            session.run = None;
            let run = Run::start(&session.config)?;
            let output = shown(&run.plan_report());
            session.later = run.later_files();
            session.run = Some(run);
            session.plans = QueryPlans::default();
            output
        }
        Op::Parse => shown(&session.run.as_mut().ok_or(no_run("parse"))?.parse()?),
        Op::Dedup => {
            let report = session.run.as_mut().ok_or(no_run("dedup"))?.dedup()?;
            session.plans.dedup = Some(report.method.clone());
            shown(&report)
        }
        Op::Hourly => {
            let report = session
                .run
                .as_mut()
                .ok_or(no_run("hourly"))?
                .write_hourly()?;
            session.plans.aggregation = report.plan.clone();
            shown(&report)
        }
        Op::Explain => shown(&session.plans),
        Op::Cumulative => shown(
            &session
                .run
                .as_mut()
                .ok_or(no_run("cumulative"))?
                .write_cumulative()?,
        ),
        Op::Finish => shown(&session.run.take().ok_or(no_run("finish"))?.finish()?),
        Op::CatchUp => {
            if session.run.is_some() {
                return Err(Error::StepOrder {
                    step: "catch_up",
                    needs: "finish",
                });
            }
            shown(&catch_up(
                &session.config,
                std::mem::take(&mut session.later),
            )?)
        }
        Op::Rebuild => {
            session.run = None;
            if session.config.rebuild {
                shown(&rebuild(&session.config)?)
            } else {
                shown(&RebuildReport::default())
            }
        }
        Op::Bills => shown(&view::bills(&session.config)?),
        Op::Chart => {
            let customer = match argument.trim() {
                "" => session.config.chart_customer.as_str(),
                customer => customer,
            };
            match view::customer_month(&session.config, customer)? {
                Some(month) => shown(&month),
                None => ("no usage yet".to_owned(), html::para("no usage yet")),
            }
        }
        Op::Sql => shown(&view::sql(&session.config, argument, view::SQL_ROW_LIMIT)?),
        Op::Tables => shown(&view::tables(&session.config)?),
        Op::Verify => {
            let report = crate::verify::verify(&session.config)?;
            if !report.ok() {
                return Err(Error::Disagreements(report.to_string()));
            }
            shown(&report)
        }
        Op::Configure | Op::Close => {
            return Err(Error::Request(format!(
                "`{}` is not a step of a session",
                op.as_str()
            )));
        }
    })
}

fn missing(what: &str) -> Error {
    Error::Request(format!("the request lacks a valid {what}"))
}
