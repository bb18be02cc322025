//! What the alerts keep of each meter between runs, and its stored form: one `alert_meters` row
//! per meter (its key, its customer's key, and its [`History`] packed into one binary value).
//! One row per meter, not one per run of hours: the table is read whole and rewritten by every
//! run, and at 100,000 meters a week of flow and dry runs is millions of rows but a few
//! megabytes packed.
//!
//! The packed value, format 1: a byte `1`, then signed LEB128 varints (zigzag):
//!
//! - the hearing: `0` (never heard), `1` and the folder last heard in, or `2`, that folder, the
//!   count of quiet folders since and the first and last of them;
//! - the flow runs: their count, then each run's first hour, last hour, flow hours and usage (ml);
//! - the dry runs: their count, then each run's first and last hour;
//! - the billing months not closed: their count, then each month's first hour with readings, end
//!   (first hour after it), hours with readings and usage (ml).
//!
//! Every hour is written as its difference from the hour written before it (the first from 0),
//! so sorted runs take a byte or two each. A value that ends early, goes on after its end or
//! has another format is refused, as are hours, counts and sums out of range (so that nothing
//! computed from them overflows), quiet folders that do not follow the one last heard in, runs
//! that contradict each other ([`FlowHistory::from_runs`]) and a month that is not a billing
//! month's.

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::hashing::FastMap;
use crate::hours::{month_end_hour, month_start_hour};
use crate::query::alerts::{FlowHistory, FlowRun, Hearing, MonthTally};
use crate::table::{ALERT_METERS, Table, Values, block_on, col, long_values};

/// One meter's alert history between runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct History {
    /// Key of the customer of its latest record.
    pub customer: i64,
    pub hearing: Option<Hearing>,
    pub flow: FlowHistory,
    /// The billing months the watermark has not closed, by their end.
    pub months: BTreeMap<i64, MonthTally>,
}

/// The format [`encode`] writes and [`decode`] reads.
const FORMAT: u8 = 1;

/// The hour indexes a history may hold: about 125 million years either side of 1970, far
/// beyond any log, so that no arithmetic on them overflows.
const HOURS: (i64, i64) = (-(1 << 40), 1 << 40);

/// The counts and sums (hours, folders, ml) a history may hold: up to 2^53 ml is 9 billion
/// cubic meters, and sums of them cannot overflow.
const AMOUNTS: (i64, i64) = (0, 1 << 53);

fn within(value: i64, (low, high): (i64, i64), what: &str) -> std::result::Result<i64, String> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{what} of {value}, outside {low}..={high}"))
    }
}

/// Writes signed varints, hours as differences.
struct Writer<'a> {
    bytes: &'a mut Vec<u8>,
    hour: i64,
}

impl Writer<'_> {
    fn int(&mut self, value: i64) {
        let mut v = ((value << 1) ^ (value >> 63)) as u64;
        while v >= 0x80 {
            self.bytes.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.bytes.push(v as u8);
    }

    fn hour(&mut self, hour: i64) {
        self.int(hour.wrapping_sub(self.hour));
        self.hour = hour;
    }

    fn count(&mut self, n: usize) {
        self.int(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Reads what [`Writer`] wrote.
struct Reader<'a> {
    bytes: &'a [u8],
    hour: i64,
}

impl Reader<'_> {
    fn int(&mut self) -> std::result::Result<i64, String> {
        // Most numbers (hours as differences, small counts) take one byte.
        if let Some((&byte, rest)) = self.bytes.split_first()
            && byte < 0x80
        {
            self.bytes = rest;
            let v = i64::from(byte);
            return Ok((v >> 1) ^ -(v & 1));
        }
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first().ok_or("it ends early")?;
            self.bytes = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if shift == 63 && byte > 1 {
                return Err("a number runs over 64 bits".to_owned());
            }
            if byte & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err("a number runs over 64 bits".to_owned())
    }

    /// An hour index, within [`HOURS`].
    fn hour(&mut self) -> std::result::Result<i64, String> {
        self.hour = self.hour.wrapping_add(self.int()?);
        within(self.hour, HOURS, "an hour")
    }

    /// A count or a sum, within [`AMOUNTS`].
    fn amount(&mut self, what: &str) -> std::result::Result<i64, String> {
        let value = self.int()?;
        within(value, AMOUNTS, what)
    }

    /// A count of items of at least one byte each: never more than the bytes left.
    fn count(&mut self) -> std::result::Result<usize, String> {
        let n = self.int()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| format!("a count of {n} with {} bytes left", self.bytes.len()))
    }
}

/// The packed form of `history` (its customer is stored beside it).
#[cfg(test)]
fn encode(history: &History) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_into(history, &mut bytes);
    bytes
}

/// Appends the packed form of `history` (its customer is stored beside it) to `bytes`.
pub(super) fn encode_into(history: &History, bytes: &mut Vec<u8>) {
    bytes.push(FORMAT);
    let mut w = Writer { bytes, hour: 0 };
    match history.hearing {
        None => w.int(0),
        Some(h) => {
            w.int(if h.quiet_span.is_some() { 2 } else { 1 });
            w.hour(h.last_heard);
            if let Some((first, last)) = h.quiet_span {
                w.int(h.quiet);
                w.hour(first);
                w.hour(last);
            }
        }
    }
    let flow = history.flow.flow_runs();
    w.count(flow.len());
    for run in flow {
        w.hour(run.first);
        w.hour(run.last);
        w.int(run.hours);
        w.int(run.usage_ml);
    }
    let dry = history.flow.dry_runs();
    w.count(dry.len());
    for &(first, last) in dry {
        w.hour(first);
        w.hour(last);
    }
    w.count(history.months.len());
    for month in history.months.values() {
        w.hour(month.first);
        w.hour(month.end);
        w.int(month.hours);
        w.int(month.usage_ml);
    }
}

/// The first hour of each billing month by its end (the first hour after it), in one zone:
/// worked out once per month, not once per meter.
pub(super) struct MonthStarts {
    tz: chrono_tz::Tz,
    known: FastMap<i64, std::result::Result<i64, String>>,
}

impl MonthStarts {
    pub(super) fn new(tz: chrono_tz::Tz) -> Self {
        Self {
            tz,
            known: FastMap::default(),
        }
    }

    /// The first hour of the billing month that ends at `end`, if a billing month does.
    fn of(&mut self, end: i64) -> std::result::Result<i64, String> {
        let tz = self.tz;
        self.known
            .entry(end)
            .or_insert_with(|| {
                let start = month_start_hour(end - 1, tz).map_err(|e| e.to_string())?;
                let month_end = month_end_hour(start, tz).map_err(|e| e.to_string())?;
                if month_end == end {
                    Ok(start)
                } else {
                    Err(format!("hour {end} is not the end of a billing month"))
                }
            })
            .clone()
    }
}

/// The history packed in `bytes` (with `customer`), its months checked to be billing months of
/// `months`' zone.
fn decode(
    bytes: &[u8],
    customer: i64,
    months: &mut MonthStarts,
) -> std::result::Result<History, String> {
    let (&format, rest) = bytes.split_first().ok_or("it is empty")?;
    if format != FORMAT {
        return Err(format!(
            "it has format {format}; this version reads format {FORMAT}"
        ));
    }
    let mut r = Reader {
        bytes: rest,
        hour: 0,
    };
    let hearing = match r.int()? {
        0 => None,
        tag @ (1 | 2) => {
            let last_heard = r.hour()?;
            let (quiet, quiet_span) = if tag == 2 {
                let quiet = r.amount("a count of quiet folders")?;
                let (first, last) = (r.hour()?, r.hour()?);
                // Quiet folders follow the one last heard in, between the first and last.
                if !(last_heard < first && first <= last && (1..=last - first + 1).contains(&quiet))
                {
                    return Err(format!(
                        "{quiet} quiet folders from {first} to {last}, last heard in {last_heard}"
                    ));
                }
                (quiet, Some((first, last)))
            } else {
                (0, None)
            };
            Some(Hearing {
                last_heard,
                quiet,
                quiet_span,
            })
        }
        tag => return Err(format!("{tag} is not a hearing")),
    };
    // Room for the runs a batch adds, so that adding them does not copy the others.
    let n = r.count()?;
    let mut flow = Vec::with_capacity(n + 2);
    for _ in 0..n {
        flow.push(FlowRun {
            first: r.hour()?,
            last: r.hour()?,
            hours: r.amount("a run's flow hours")?,
            usage_ml: r.amount("a run's usage")?,
        });
    }
    let n = r.count()?;
    let mut dry = Vec::with_capacity(n + 2);
    for _ in 0..n {
        dry.push((r.hour()?, r.hour()?));
    }
    let n = r.count()?;
    let month_starts = months;
    let mut months = BTreeMap::new();
    for _ in 0..n {
        let (first, end) = (r.hour()?, r.hour()?);
        let (hours, usage_ml) = (r.amount("a month's hours")?, r.amount("a month's usage")?);
        let start = month_starts.of(end)?;
        if !(start..end).contains(&first) || !(0..=end - first).contains(&hours) {
            return Err(format!(
                "a month from hour {first} to {end} with {hours} hours is not a billing month's"
            ));
        }
        let tally = MonthTally {
            end,
            first,
            hours,
            usage_ml,
        };
        if months.insert(end, tally).is_some() {
            return Err(format!("the month ending at hour {end} twice"));
        }
    }
    if !r.bytes.is_empty() {
        return Err(format!("{} bytes after its end", r.bytes.len()));
    }
    let flow = FlowHistory::from_runs(flow, dry).map_err(|e| e.0.to_owned())?;
    Ok(History {
        customer,
        hearing,
        flow,
        months,
    })
}

/// The rows of `table` (`alert_meters`), as stored.
pub(super) fn read_stored(table: &Table) -> Result<DataFrame> {
    block_on(table.read_hours(&Default::default()))?
}

/// One meter's stored row: its key, its customer's key and its packed history.
pub(super) type StoredRow<'a> = (i64, i64, &'a [u8]);

/// The meters of `rows` (read by [`read_stored`]) in key order, refused if a value is missing
/// or a meter has two rows.
pub(super) fn stored_rows(rows: &DataFrame) -> Result<Vec<StoredRow<'_>>> {
    let name = ALERT_METERS.name;
    let (meters, customers) = (
        long_values(rows, col::METER, name)?,
        long_values(rows, col::CUSTOMER, name)?,
    );
    let packed = rows
        .column(col::HISTORY)
        .and_then(|c| c.binary())
        .map_err(|e| Error::table_data(name, col::HISTORY, e.to_string()))?;
    let mut stored = meters
        .iter()
        .zip(customers.iter())
        .zip(packed.iter())
        .map(|((&meter, &customer), bytes)| {
            Ok((
                meter,
                customer,
                bytes.ok_or_else(|| bad_row(meter, "no value"))?,
            ))
        })
        .collect::<Result<Vec<StoredRow<'_>>>>()?;
    // Written in key order: sorting finds them sorted, and two rows of a meter side by side.
    stored.sort_unstable_by_key(|r| r.0);
    match stored.windows(2).find(|w| w[0].0 == w[1].0) {
        Some(w) => Err(bad_row(w[0].0, "two rows")),
        None => Ok(stored),
    }
}

/// The history of `meter`'s stored row (`bytes`, with `customer`), or an error naming it.
pub(super) fn decode_row(
    meter: i64,
    customer: i64,
    bytes: &[u8],
    months: &mut MonthStarts,
) -> Result<History> {
    decode(bytes, customer, months).map_err(|reason| bad_row(meter, &reason))
}

/// What is wrong with `meter`'s stored row.
fn bad_row(meter: i64, reason: &str) -> Error {
    Error::table_data(
        ALERT_METERS.name,
        col::HISTORY,
        format!("meter key {meter}: {reason}"),
    )
}

/// The `alert_meters` rows: meter keys, their customers' keys and packed histories.
pub(super) fn histories_frame(
    keys: Vec<i64>,
    customers: Vec<i64>,
    packed: &[&[u8]],
) -> Result<DataFrame> {
    let packed = Series::new(col::HISTORY.into(), packed).into_column();
    ALERT_METERS.frame(vec![
        Values::Long(keys),
        Values::Long(customers),
        Values::Built(packed),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hours::parse_hour;

    const TZ: chrono_tz::Tz = chrono_tz::UTC;

    fn hour(text: &str) -> i64 {
        parse_hour(text).expect("an hour")
    }

    /// A history with every part: a quiet meter, flow runs (one merged by the watermark, with
    /// fewer flow hours than it spans), dry runs and two open months.
    fn full() -> History {
        let may = hour("2026-05-31T20");
        let flow = FlowHistory::from_runs(
            vec![
                FlowRun {
                    first: may - 40,
                    last: may - 3,
                    hours: 30,
                    usage_ml: 912_345,
                },
                FlowRun {
                    first: may + 1,
                    last: may + 1,
                    hours: 1,
                    usage_ml: 7,
                },
            ],
            vec![(may - 50, may - 41), (may - 2, may), (may + 2, may + 9)],
        )
        .expect("a valid history");
        let june_end = hour("2026-07-01T00");
        let may_end = hour("2026-06-01T00");
        History {
            customer: 41,
            hearing: Some(Hearing {
                last_heard: may + 9,
                quiet: 3,
                quiet_span: Some((may + 10, may + 14)),
            }),
            flow,
            months: BTreeMap::from([
                (
                    may_end,
                    MonthTally {
                        end: may_end,
                        first: may - 50,
                        hours: 50,
                        usage_ml: 912_352,
                    },
                ),
                (
                    june_end,
                    MonthTally {
                        end: june_end,
                        first: may + 4,
                        hours: 6,
                        usage_ml: 0,
                    },
                ),
            ]),
        }
    }

    #[test]
    fn a_history_reads_back_as_written() {
        let cases = [
            full(),
            History::default(),
            History {
                customer: 3,
                hearing: Some(Hearing {
                    last_heard: hour("2026-05-01T00"),
                    quiet: 0,
                    quiet_span: None,
                }),
                ..History::default()
            },
        ];
        for history in cases {
            let bytes = encode(&history);
            assert_eq!(
                decode(&bytes, history.customer, &mut MonthStarts::new(TZ)),
                Ok(history)
            );
        }
        // Hours as differences: the full history packs in a few bytes per run.
        assert!(encode(&full()).len() < 60, "{}", encode(&full()).len());
    }

    #[test]
    fn a_damaged_value_is_refused() {
        let bytes = encode(&full());
        let refused =
            |bytes: &[u8]| decode(bytes, 41, &mut MonthStarts::new(TZ)).expect_err("refused");
        assert!(refused(&bytes[..bytes.len() - 1]).contains("ends early"));
        assert!(refused(&[bytes.as_slice(), &[0]].concat()).contains("1 bytes after its end"));
        assert!(refused(&[&[2u8], &bytes[1..]].concat()).contains("format 2"));
        assert!(refused(&[]).contains("empty"));
        // A count of runs larger than the bytes left.
        assert!(refused(&[FORMAT, 0, 0x7e]).contains("a count of 63"));
        // Two dry runs that touch.
        let mut buf = vec![FORMAT];
        let mut w = Writer {
            bytes: &mut buf,
            hour: 0,
        };
        for v in [0, 0, 2] {
            w.int(v);
        }
        for h in [10, 11, 12, 13] {
            w.hour(h);
        }
        w.int(0);
        assert!(refused(&buf).contains("dry runs"));
        // A month that does not end where a billing month does.
        let mut buf = vec![FORMAT];
        let mut w = Writer {
            bytes: &mut buf,
            hour: 0,
        };
        for v in [0, 0, 0, 1] {
            w.int(v);
        }
        w.hour(hour("2026-05-03T00"));
        w.hour(hour("2026-05-31T00"));
        w.int(1);
        w.int(5);
        assert!(refused(&buf).contains("not the end of a billing month"));
    }

    #[test]
    fn format_1_is_pinned() {
        // Worked by hand: heard in hour 10, quiet in 11 and 12; flow in 13 and 14 (100 ml), dry
        // in 15; January 1970 (UTC hours 0 to 743) with readings in 3 hours from 10.
        let history = History {
            customer: 5,
            hearing: Some(Hearing {
                last_heard: 10,
                quiet: 2,
                quiet_span: Some((11, 12)),
            }),
            flow: FlowHistory::from_runs(
                vec![FlowRun {
                    first: 13,
                    last: 14,
                    hours: 2,
                    usage_ml: 100,
                }],
                vec![(15, 15)],
            )
            .expect("a valid history"),
            months: BTreeMap::from([(
                744,
                MonthTally {
                    end: 744,
                    first: 10,
                    hours: 3,
                    usage_ml: 100,
                },
            )]),
        };
        let bytes: [u8; 22] = [
            1, // format
            4, 20, 4, 2, 2, // hearing 2: heard in 10, 2 quiet, 11 (+1) to 12 (+1)
            2, 2, 2, 4, 0xc8, 1, // 1 flow run: 13 (+1) to 14 (+1), 2 hours, 100 ml
            2, 2, 0, // 1 dry run: 15 (+1) to 15 (+0)
            2, 9, 0xbc, 0x0b, 6, 0xc8,
            1, // 1 month: from 10 (-5), end 744 (+734), 3 h, 100 ml
        ];
        assert_eq!(encode(&history), bytes);
        assert_eq!(decode(&bytes, 5, &mut MonthStarts::new(TZ)), Ok(history));
    }

    #[test]
    fn values_that_would_overflow_or_contradict_are_refused() {
        let refused = |values: &[i64]| {
            let mut buf = vec![FORMAT];
            let mut w = Writer {
                bytes: &mut buf,
                hour: 0,
            };
            for &v in values {
                w.int(v);
            }
            decode(&buf, 1, &mut MonthStarts::new(TZ)).expect_err("refused")
        };
        // A flow run to the last i64 hour.
        assert!(refused(&[0, 1, 0, i64::MAX, 1, 1, 0, 0]).contains("an hour of"));
        // A usage beyond 2^53 ml.
        assert!(refused(&[0, 1, 0, 0, 1, 1 << 60, 0, 0]).contains("a run's usage"));
        // Quiet folders before the one last heard in, and more of them than the span holds.
        assert!(refused(&[2, 10, 1, -1, 0]).contains("last heard in 10"));
        assert!(refused(&[2, 10, 3, 1, 1]).contains("3 quiet folders"));
        assert!(refused(&[3]).contains("not a hearing"));
        // Ten bytes whose last holds more than the 64th bit.
        let mut over = vec![FORMAT];
        over.extend([0xff; 9]);
        over.push(2);
        assert!(
            decode(&over, 1, &mut MonthStarts::new(TZ))
                .expect_err("refused")
                .contains("64 bits")
        );
    }

    #[test]
    fn stored_rows_come_in_key_order_and_a_meter_twice_is_refused() -> Result<()> {
        let frame = |meters: Vec<i64>| {
            histories_frame(
                meters.clone(),
                vec![7; meters.len()],
                &vec![&[1u8][..]; meters.len()],
            )
        };
        let rows = frame(vec![3, 1, 2])?;
        let keys: Vec<i64> = stored_rows(&rows)?.iter().map(|r| r.0).collect();
        assert_eq!(keys, vec![1, 2, 3]);
        let twice = frame(vec![3, 1, 3])?;
        let refused = stored_rows(&twice).expect_err("refused").to_string();
        assert!(refused.contains("meter key 3: two rows"), "{refused}");
        Ok(())
    }

    #[test]
    fn varints_cover_every_integer() {
        for v in [0, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN] {
            let mut buf = Vec::new();
            let mut w = Writer {
                bytes: &mut buf,
                hour: 0,
            };
            w.int(v);
            let mut r = Reader {
                bytes: &buf,
                hour: 0,
            };
            assert_eq!(r.int(), Ok(v));
            assert!(r.bytes.is_empty());
        }
    }
}
