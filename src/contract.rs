//! What the notebook and the library agree on: the notebook's parameters and the requests the
//! notebook facade sends across the C ABI, with their wire format.
//!
//! This is the one definition of both. The library compiles it as `aquabill::contract`; the
//! dependency-free notebook facade (`notebook-api/`) includes this very file with `#[path]`, so
//! the two cannot drift apart, and `PROTOCOL` in every request catches a facade talking to a
//! library built from other sources. `run_once` takes the same parameters (`-p name value`), and
//! a unit test checks that the notebook's first cell binds exactly these, with these types and
//! defaults. This file uses nothing but `core` and `std`.

use std::fmt::Write as _;

/// Version of the request protocol; bump it whenever a request or answer changes shape.
pub const PROTOCOL: u32 = 7;

/// The Rust type of a parameter as the notebook's first cell declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `&str`.
    Text,
    /// `i64`.
    Int,
    /// `bool`.
    Bool,
}

impl Kind {
    /// The type as written in the notebook's `let` binding.
    pub fn rust_type(self) -> &'static str {
        match self {
            Kind::Text => "&str",
            Kind::Int => "i64",
            Kind::Bool => "bool",
        }
    }
}

/// One parameter: its name, type, default (as the Rust literal in the notebook) and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parameter {
    /// Name of the `let` binding.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The default value as a Rust literal (`"../data/sample"`, `0`, `false`).
    pub default: &'static str,
    /// What it means, for people.
    pub doc: &'static str,
}

macro_rules! parameters {
    ($($(#[doc = $doc:literal])+ $name:ident: $kind:ident = $default:tt,)+) => {
        /// The notebook's parameters, as its first cell binds them (paths relative to the
        /// notebook's folder). Validated by `aquabill::Config::new` before anything is written.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Params<'a> {
            $($(#[doc = $doc])+ pub $name: parameters!(@type $kind 'a),)+
        }

        /// Every parameter, in the order of the notebook's first cell.
        pub const PARAMETERS: &[Parameter] = &[
            $(Parameter {
                name: stringify!($name),
                kind: Kind::$kind,
                default: stringify!($default),
                doc: concat!($($doc),+),
            },)+
        ];

        impl Default for Params<'static> {
            /// The notebook's defaults: they run on the bundled sample log.
            fn default() -> Self {
                Self { $($name: $default,)+ }
            }
        }

        impl<'a> Params<'a> {
            /// Sets the parameter `name` from its text (`-p name value`): integers in decimal,
            /// booleans as `true`/`false` (or papermill's `True`/`False`), text as it is.
            pub fn set(&mut self, name: &str, value: &'a str) -> Result<(), String> {
                match name {
                    $(stringify!($name) => {
                        self.$name = parameters!(@parse $kind name value);
                        Ok(())
                    })+
                    _ => Err(format!("`{name}` is not a parameter of the notebook")),
                }
            }

            /// The parameters in the request format: `name=<bytes>:<value>` lines.
            pub fn encode(&self) -> String {
                let mut out = String::new();
                $(parameters!(@encode out $kind stringify!($name), &self.$name);)+
                out
            }
        }
    };
    (@type Text $a:lifetime) => { &$a str };
    (@type Int $a:lifetime) => { i64 };
    (@type Bool $a:lifetime) => { bool };
    (@parse Text $name:ident $value:ident) => { $value };
    (@parse Int $name:ident $value:ident) => {
        $value.trim().parse::<i64>().map_err(|_| format!("`{}` must be an integer, not `{}`", $name, $value))?
    };
    (@parse Bool $name:ident $value:ident) => {
        match $value.trim() {
            "true" | "True" => true,
            "false" | "False" => false,
            _ => return Err(format!("`{}` must be true or false, not `{}`", $name, $value)),
        }
    };
    (@encode $out:ident $kind:ident $name:expr, $value:expr) => {{
        let text = $value.to_string();
        let _ = writeln!($out, "{}={}:{}", $name, text.len(), text);
    }};
}

parameters! {
    /// Root of the usage log: one folder per ingestion hour (`ingest_hour=YYYY-MM-DDTHH/*.jsonl`).
    input_root: Text = "../data/sample",
    /// Folder of the output tables.
    output_root: Text = "../out/tables",
    /// Checkpoint and dedup state; empty means `<output_root>/_checkpoint`.
    checkpoint_location: Text = "",
    /// IANA time zone the billing months are counted in.
    billing_timezone: Text = "UTC",
    /// Most input files one run takes; 0 takes every new file.
    batch_cap: Int = 0,
    /// A run takes its new files in chunks of at most this many megabytes of log (at least one
    /// file each), each chunk a batch of its own, one after another; 0: one chunk. An ingestion
    /// hour of up to 4 chunks is one chunk, whole: each batch holding part of an hour rewrites
    /// that hour's table files.
    chunk_mb: Int = 512,
    /// How far past its ingestion hour's end a record may be dated, in minutes.
    clock_skew_minutes: Int = 5,
    /// `true`: first recompute every table from the log (after a data error in it was fixed).
    rebuild: Bool = false,
    /// With `rebuild`: plan the batches afresh from the log as runs would now (folders dated
    /// in the future held back) instead of replaying the committed plans.
    rebuild_from_log: Bool = false,
    /// With `rebuild`: the tables may have been built with another `billing_timezone`; the
    /// rebuild recomputes them all in this one, in place, closed bills included (every rebuild
    /// writes a report of the closed bills it changed).
    rewrite_closed_bills: Bool = false,
    /// The customer whose month the chart shows; empty: the one with the largest total.
    chart_customer: Text = "",
    /// Hours of flow without a dry hour between them that make a `continuous_flow` alert.
    alert_flow_hours: Int = 24,
    /// Ingestion hours taken without a record of a meter that make a `silent` alert.
    alert_silent_hours: Int = 24,
    /// Hours before a billing month closes from which a meter's hours without readings since its
    /// first reading of the month make a `bill_at_risk` alert.
    alert_close_hours: Int = 48,
}

impl<'a> Params<'a> {
    /// Parameters from command-line arguments `-p NAME VALUE ...` (the value syntax of
    /// `aquabill-papermill`'s `-p`), the others at their defaults; also returns the arguments
    /// after the last `-p` triple.
    pub fn from_args(args: &'a [String]) -> Result<(Self, &'a [String]), String> {
        let mut params = Params::default();
        let mut rest = args;
        while let [flag, name, value, tail @ ..] = rest {
            if flag != "-p" {
                break;
            }
            params.set(name, value)?;
            rest = tail;
        }
        Ok((params, rest))
    }

    /// Parameters from [`Params::encode`]'s format; values borrow from `text`. Every parameter
    /// must be present.
    pub fn decode(text: &'a str) -> Result<Self, String> {
        let mut params = Params::default();
        let mut seen = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let (name, after) = rest
                .split_once('=')
                .ok_or_else(|| "malformed parameters".to_owned())?;
            let (len, after) = after
                .split_once(':')
                .ok_or_else(|| format!("malformed parameter `{name}`"))?;
            let len: usize = len
                .parse()
                .map_err(|_| format!("malformed length of parameter `{name}`"))?;
            let value = after
                .get(..len)
                .ok_or_else(|| format!("parameter `{name}` is cut short"))?;
            params.set(name, value)?;
            seen.push(name);
            rest = after[len..]
                .strip_prefix('\n')
                .ok_or_else(|| format!("malformed end of parameter `{name}`"))?;
        }
        match PARAMETERS.iter().find(|p| !seen.contains(&p.name)) {
            Some(missing) => Err(format!("parameter `{}` is missing", missing.name)),
            None => Ok(params),
        }
    }
}

macro_rules! operations {
    ($($(#[doc = $doc:literal])+ $op:ident = $wire:literal,)+) => {
        /// What the notebook asks the library to do.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Op {
            $($(#[doc = $doc])+ $op,)+
        }

        impl Op {
            /// The operation's name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Op::$op => $wire,)+
                }
            }

            /// The operation named `wire`.
            pub fn parse(wire: &str) -> Option<Self> {
                match wire {
                    $($wire => Some(Op::$op),)+
                    _ => None,
                }
            }
        }
    };
}

operations! {
    /// Validates the parameters (the argument: [`Params::encode`]) and opens a session.
    Configure = "configure",
    /// Rebuilds every table from the log when the parameter `rebuild` is true.
    Rebuild = "rebuild",
    /// Plans the batch.
    Plan = "plan",
    /// Parses the planned files.
    Parse = "parse",
    /// Applies the watermark and removes duplicates.
    Dedup = "dedup",
    /// Updates `hourly_usage`.
    Hourly = "hourly",
    /// Updates `cumulative_usage`.
    Cumulative = "cumulative",
    /// Writes quarantine, metrics and dedup state; advances the checkpoint.
    Finish = "finish",
    /// Processes the rest of a backlog, batch after batch, until no new file is left.
    CatchUp = "catch_up",
    /// The bills of the latest months.
    Bills = "bills",
    /// One customer's month as a chart (the argument: the customer; empty: `chart_customer`).
    Chart = "chart",
    /// A SQL query over the output tables (the argument: the query).
    Sql = "sql",
    /// The output tables: version, files, rows, columns.
    Tables = "tables",
    /// Checks the tables without writing (an error when anything disagrees).
    Verify = "verify",
    /// Polars' optimized plans of the batch's dedup and aggregation queries.
    Explain = "explain",
    /// Ends the session.
    Close = "close",
}

/// One request from the notebook: `aquabill <protocol> <op> <session>\n<argument>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The operation.
    pub op: Op,
    /// The session it acts on (0 for [`Op::Configure`]).
    pub session: u64,
    /// Its argument (see [`Op`]); empty when it takes none.
    pub argument: &'a str,
}

impl<'a> Request<'a> {
    /// The request on the wire, with this file's [`PROTOCOL`].
    pub fn encode(&self) -> String {
        format!(
            "aquabill {PROTOCOL} {} {}\n{}",
            self.op.as_str(),
            self.session,
            self.argument
        )
    }

    /// A request from the wire; refuses one of another protocol version.
    pub fn decode(text: &'a str) -> Result<Self, String> {
        let (head, argument) = text.split_once('\n').unwrap_or((text, ""));
        let mut words = head.split(' ');
        if words.next() != Some("aquabill") {
            return Err("not a request of the aquabill notebook".to_owned());
        }
        let protocol = words.next().and_then(|p| p.parse::<u32>().ok());
        if protocol != Some(PROTOCOL) {
            return Err(format!(
                "the notebook's facade speaks protocol {}, this pipeline library {PROTOCOL}: \
                 they were built from different sources. Restart the kernel (`:restart`) and run \
                 the notebook from the top: its import cell rebuilds the library",
                protocol.map_or_else(|| "?".to_owned(), |p| p.to_string())
            ));
        }
        let op = words
            .next()
            .and_then(Op::parse)
            .ok_or_else(|| format!("unknown operation in `{head}`"))?;
        let session = words
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no session in `{head}`"))?;
        Ok(Self {
            op,
            session,
            argument,
        })
    }
}

/// The separator between an answer's text and its HTML (ASCII record separator).
pub const HTML_SEPARATOR: char = '\u{1e}';

/// The library's answer: `OK <session>\n<text>\u{1e}<html>` or `ERR\n<message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Done: the session, and what the step shows as text and as HTML.
    Ok {
        /// The session the request acted on (a new one for [`Op::Configure`]).
        session: u64,
        /// Plain text (logs, papermill).
        text: String,
        /// HTML (Jupyter); may be empty.
        html: String,
    },
    /// The step failed; nothing after the failure point was committed.
    Err(String),
}

impl Answer {
    /// The answer on the wire.
    pub fn encode(&self) -> String {
        match self {
            Answer::Ok {
                session,
                text,
                html,
            } => format!(
                "OK {session}\n{}{HTML_SEPARATOR}{html}",
                text.replace(HTML_SEPARATOR, " ")
            ),
            Answer::Err(message) => format!("ERR\n{message}"),
        }
    }

    /// An answer from the wire.
    pub fn decode(text: &str) -> Self {
        let (head, body) = text.split_once('\n').unwrap_or((text, ""));
        match head.strip_prefix("OK ").and_then(|s| s.parse().ok()) {
            Some(session) => {
                let (text, html) = body.split_once(HTML_SEPARATOR).unwrap_or((body, ""));
                Answer::Ok {
                    session,
                    text: text.to_owned(),
                    html: html.to_owned(),
                }
            }
            None if head == "ERR" => Answer::Err(body.to_owned()),
            None => Answer::Err(format!("the pipeline library answered `{head}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_round_trip_with_any_text() {
        let mut p = Params::default();
        p.set("input_root", "odd = name:\nwith 7:lines\u{1e}é")
            .and_then(|()| p.set("batch_cap", "12"))
            .and_then(|()| p.set("rebuild", "True"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Params::decode(&p.encode()), Ok(p.clone()));
        assert_eq!(p.batch_cap, 12);
        assert!(p.rebuild);
        assert!(p.set("batch_cap", "ten").is_err());
        assert!(p.set("rebuild", "yes").is_err());
        assert!(p.set("no_such", "1").is_err());
        let without_last = p.encode().replace("chart_customer=0:\n", "");
        assert_eq!(
            Params::decode(&without_last),
            Err("parameter `chart_customer` is missing".to_owned())
        );
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        // The parameters and defaults as the README's table documents them, in order.
        let documented = [
            ("input_root", "../data/sample"),
            ("output_root", "../out/tables"),
            ("checkpoint_location", ""),
            ("billing_timezone", "UTC"),
            ("batch_cap", "0"),
            ("chunk_mb", "512"),
            ("clock_skew_minutes", "5"),
            ("rebuild", "false"),
            ("rebuild_from_log", "false"),
            ("rewrite_closed_bills", "false"),
            ("chart_customer", ""),
            ("alert_flow_hours", "24"),
            ("alert_silent_hours", "24"),
            ("alert_close_hours", "48"),
        ];
        let listed: Vec<(&str, &str)> = PARAMETERS
            .iter()
            .map(|p| (p.name, p.default.trim_matches('"')))
            .collect();
        assert_eq!(listed, documented);
        // The defaults a `Params::default()` carries on the wire are the same values.
        let expected: String = documented
            .iter()
            .map(|(name, value)| format!("{name}={}:{value}\n", value.len()))
            .collect();
        assert_eq!(Params::default().encode(), expected);
        // And the README's table says so.
        // (The facade includes this file too: the README is its package's parent's.)
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = [manifest, manifest.parent().unwrap_or(manifest)]
            .iter()
            .find_map(|dir| std::fs::read_to_string(dir.join("README.md")).ok())
            .unwrap_or_default();
        let section = readme
            .split("\n## Parameters\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_default();
        let in_readme: Vec<(&str, &str)> = section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .filter_map(|line| {
                let mut cells = line.split('|').map(str::trim).skip(1);
                let name = cells.next()?.trim_matches('`');
                let default = cells.next()?.trim_matches('`').trim_matches('"');
                Some((name, default))
            })
            .collect();
        assert_eq!(in_readme, documented);
    }

    #[test]
    fn requests_carry_the_protocol() {
        let request = Request {
            op: Op::Chart,
            session: 7,
            argument: "C 1\nsecond line",
        };
        assert_eq!(Request::decode(&request.encode()), Ok(request));
        let old = format!("aquabill {} plan 1\n", PROTOCOL - 1);
        assert!(Request::decode(&old).is_err_and(|e| e.contains("different sources")));
        let answer = Answer::Ok {
            session: 3,
            text: "a\u{1e}b".into(),
            html: "<p>x</p>".into(),
        };
        assert_eq!(
            Answer::decode(&answer.encode()),
            Answer::Ok {
                session: 3,
                text: "a b".into(),
                html: "<p>x</p>".into()
            }
        );
        assert_eq!(
            Answer::decode(&Answer::Err("no".into()).encode()),
            Answer::Err("no".into())
        );
    }
}
