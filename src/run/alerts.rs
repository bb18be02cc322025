//! The alerts, the first part of the finish step: what each meter's history (`alert_meters`)
//! knows is brought up to date with the batch (the hours its accepted readings fall in, the
//! folders its records came in), every episode that history still decides is judged again with
//! the run's thresholds, and `meter_alerts` is rewritten with them beside the final ones. Two
//! commits, `meter_alerts` first: a rerun after a crash between them reads the history as the
//! crashed attempt did and writes the same one.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;

use super::{Run, Stage};
use crate::error::{Error, Result};
use crate::hashing::FastMap;
use crate::hours::{month_end_hour, month_start_hour};
use crate::input::INGEST_HOUR;
use crate::query::alerts::{AlertKind, Episode, FlowHistory, FlowRun, Hearing, MonthTally, listen};
use crate::table::{ALERT_METERS, METER_ALERTS, Table, Values, block_on, col, long_values};

/// What a batch holds of one meter: for its silence.
pub(super) struct Heard {
    /// Meter key.
    pub meter: i64,
    /// The key of the customer of its last record in ingestion order.
    pub customer: i64,
    /// The folders (ingestion hours) holding its records, ascending.
    pub folders: Vec<i64>,
}

/// The meters of the parsed `records` (with keys for ids), with the folders their records came
/// in: every valid record, accepted or not, is the meter talking.
pub(super) fn heard(records: &DataFrame) -> Result<Vec<Heard>> {
    let long = |name: &str| long_values(records, name, "alerts");
    let (meters, customers, folders) =
        (long(col::METER)?, long(col::CUSTOMER)?, long(INGEST_HOUR)?);
    let mut by_meter: FastMap<i64, (i64, BTreeSet<i64>)> = FastMap::default();
    for ((&meter, &customer), &folder) in meters.iter().zip(customers.iter()).zip(folders.iter()) {
        let entry = by_meter.entry(meter).or_default();
        entry.0 = customer;
        entry.1.insert(folder);
    }
    Ok(by_meter
        .into_iter()
        .map(|(meter, (customer, folders))| Heard {
            meter,
            customer,
            folders: folders.into_iter().collect(),
        })
        .collect())
}

/// One meter's alert history between runs.
#[derive(Default)]
struct History {
    /// Key of the customer of its latest record.
    customer: i64,
    hearing: Option<Hearing>,
    flow: FlowHistory,
    /// The billing months the watermark has not closed, by their end.
    months: BTreeMap<i64, MonthTally>,
}

/// One `meter_alerts` row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AlertRow {
    meter_id: String,
    customer_id: String,
    kind: String,
    episode: Episode,
    threshold_hours: i64,
    opened_by_batch: i64,
    closed_by_batch: Option<i64>,
}

/// One episode judged now, with its meter and customer.
struct Judged {
    meter_id: String,
    customer_id: String,
    episode: Episode,
}

/// What a meter's history decides of its stored `meter_alerts` rows: its open silences and bills
/// at risk, when it has a history; of its flow episodes, those after the floor (`Some(None)`: all,
/// `None`: none).
struct Decides {
    open: bool,
    flow: Option<Option<i64>>,
}

impl Run {
    /// Brings `meter_alerts` and the meters' alert histories up to date with the batch.
    pub(super) fn write_alerts(&mut self) -> Result<()> {
        let batch = self.batch.plan.batch_id;
        let mut alerts = self.open(&METER_ALERTS)?;
        let mut histories = self.open(&ALERT_METERS)?;
        if block_on(histories.has_batch(batch))?? {
            // Both committed (the histories commit last): the crashed attempt's alerts stand.
            self.keep(alerts);
            self.keep(histories);
            return Ok(());
        }
        let Stage::Classified(classified) = &self.stage else {
            return Err(Error::StepOrder {
                step: "finish",
                needs: "dedup",
            });
        };
        let t = std::time::Instant::now();
        let tz = self.config.billing_timezone;
        let mut meters = read_histories(&histories, tz)?;
        let old_rows = read_alerts(&alerts)?;
        let p = crate::trace::phase("finish/alerts/read", t);
        let before = self.checkpoint.latest_ingest_hour;
        let new_folders: Vec<i64> = self
            .batch
            .plan
            .files
            .iter()
            .map(|f| f.ingest_hour)
            .filter(|&h| before.is_none_or(|b| h > b))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let ids = Ids {
            meters: &classified.meter_ids,
            customers: &classified.customer_ids,
        };
        // Which stored rows each history decides, as it was before the batch: the flow episodes
        // after its floor (all, if it begins with flow; none without flow or dry hours).
        let by_id: FastMap<&str, i64> = ids.meters.iter().map(|(&k, v)| (v.as_str(), k)).collect();
        let decides: BTreeMap<String, Decides> = old_rows
            .iter()
            .map(|row| {
                let history = by_id.get(row.meter_id.as_str()).and_then(|k| meters.get(k));
                let decides = Decides {
                    open: history.is_some(),
                    flow: history
                        .filter(|h| !h.flow.is_empty())
                        .map(|h| h.flow.floor()),
                };
                (row.meter_id.clone(), decides)
            })
            .collect();
        add_flow(&mut meters, &classified.accepted, tz)?;
        let mut heard_now: FastMap<i64, &[i64]> = FastMap::default();
        for heard in &classified.heard {
            let history = meters.entry(heard.meter).or_default();
            history.customer = heard.customer;
            heard_now.insert(heard.meter, &heard.folders);
        }
        let thresholds = Thresholds {
            flow: self.config.alert_flow_hours,
            silent: self.config.alert_silent_hours,
            close: self.config.alert_close_hours,
        };
        let watermark = self.batch.watermark_after.unwrap_or(i64::MIN);
        let mut judged: Vec<Judged> = Vec::new();
        for (meter, history) in meters.iter_mut() {
            let folders = heard_now.get(meter).copied().unwrap_or_default();
            let (hearing, mut episodes) = listen(
                history.hearing,
                &new_folders,
                folders,
                before,
                thresholds.silent,
            );
            history.hearing = hearing;
            episodes.extend(history.flow.episodes(thresholds.flow));
            episodes.extend(
                history
                    .months
                    .values()
                    .filter_map(|m| m.judge(watermark, thresholds.close)),
            );
            for episode in episodes {
                judged.push(Judged {
                    meter_id: ids.meter(*meter)?.to_owned(),
                    customer_id: ids.customer(history.customer)?.to_owned(),
                    episode,
                });
            }
        }
        let rows = merge_alerts(old_rows, judged, &decides, batch, &thresholds);
        let alert_rows = alerts_frame(&rows)?;
        // What the watermark made final is forgotten: flow before the last dry hour before
        // it, and the months it closed (their rows are final).
        for history in meters.values_mut() {
            history.flow.forget_before(watermark);
            history.months.retain(|_, m| !m.closed(watermark));
        }
        let history_rows = histories_frame(&meters)?;
        let p = crate::trace::phase("finish/alerts/judge", p);
        let old = alerts.appended_files(0);
        block_on(alerts.commit_removing(batch, Some(&alert_rows), &BTreeSet::new(), &old))??;
        let old = histories.appended_files(0);
        block_on(histories.commit_removing(batch, Some(&history_rows), &BTreeSet::new(), &old))??;
        crate::trace::phase("finish/alerts/write", p);
        self.keep(alerts);
        self.keep(histories);
        Ok(())
    }
}

/// The ids of the meter and customer keys known after the batch.
struct Ids<'a> {
    meters: &'a FastMap<i64, String>,
    customers: &'a FastMap<i64, String>,
}

impl Ids<'_> {
    fn meter(&self, key: i64) -> Result<&str> {
        self.meters
            .get(&key)
            .map(String::as_str)
            .ok_or_else(|| Error::Dedup(format!("meter key {key} has no id in `dedup_keys`")))
    }

    fn customer(&self, key: i64) -> Result<&str> {
        self.customers
            .get(&key)
            .map(String::as_str)
            .ok_or_else(|| Error::Dedup(format!("customer key {key} has no id in `dedup_keys`")))
    }
}

/// The run's thresholds, in hours.
struct Thresholds {
    flow: i64,
    silent: i64,
    close: i64,
}

impl Thresholds {
    fn of(&self, kind: AlertKind) -> i64 {
        match kind {
            AlertKind::ContinuousFlow => self.flow,
            AlertKind::Silent => self.silent,
            AlertKind::BillAtRisk => self.close,
        }
    }
}

/// Adds the batch's accepted readings, summed by meter and recording hour, to the histories:
/// their flow and dry hours, and their billing months (in `tz`).
fn add_flow(
    meters: &mut FastMap<i64, History>,
    accepted: &DataFrame,
    tz: chrono_tz::Tz,
) -> Result<()> {
    let long = |name: &str| long_values(accepted, name, "alerts");
    let (keys, hours, usage) = (
        long(col::METER)?,
        long(col::USAGE_HOUR)?,
        long(col::USAGE_ML)?,
    );
    let mut sums: FastMap<(i64, i64), i64> = FastMap::default();
    for ((&meter, &hour), &ml) in keys.iter().zip(hours.iter()).zip(usage.iter()) {
        *sums.entry((meter, hour)).or_default() += ml;
    }
    // A batch's readings fall in a few hours: each hour's month is worked out once.
    let mut month_ends: FastMap<i64, i64> = FastMap::default();
    for ((meter, hour), ml) in sums {
        let history = meters.entry(meter).or_default();
        let new_hour = !history.flow.has_readings(hour);
        history.flow.add(hour, ml);
        let end = match month_ends.get(&hour) {
            Some(&end) => end,
            None => {
                let end = month_end_hour(month_start_hour(hour, tz)?, tz)?;
                month_ends.insert(hour, end);
                end
            }
        };
        history
            .months
            .entry(end)
            .or_insert_with(|| MonthTally::new(end, hour))
            .add(hour, ml, new_hour);
    }
    Ok(())
}

/// The alert rows after the batch: the final ones kept, every episode a history still decides
/// replaced by its judgement now. An episode judged again keeps the batch that opened it (the
/// one of the same meter, kind and first hour) and the one that closed it.
fn merge_alerts(
    old_rows: Vec<AlertRow>,
    judged: Vec<Judged>,
    decides: &BTreeMap<String, Decides>,
    batch: i64,
    thresholds: &Thresholds,
) -> Vec<AlertRow> {
    let mut kept = Vec::new();
    let mut replaced: BTreeMap<(String, &'static str, i64), AlertRow> = BTreeMap::new();
    for row in old_rows {
        let decided = decides
            .get(&row.meter_id)
            .is_some_and(|d| match row.episode.kind {
                AlertKind::Silent | AlertKind::BillAtRisk => d.open && row.episode.open,
                AlertKind::ContinuousFlow => match d.flow {
                    Some(Some(floor)) => row.episode.first_hour > floor,
                    Some(None) => true,
                    None => false,
                },
            });
        if decided {
            let kind = row.episode.kind.name();
            replaced.insert((row.meter_id.clone(), kind, row.episode.first_hour), row);
        } else {
            kept.push(row);
        }
    }
    for Judged {
        meter_id,
        customer_id,
        episode,
    } in judged
    {
        let before = replaced.get(&(meter_id.clone(), episode.kind.name(), episode.first_hour));
        let closed_by_batch = match (episode.open, before) {
            (true, _) => None,
            (false, Some(b)) if !b.episode.open => b.closed_by_batch,
            (false, _) => Some(batch),
        };
        kept.push(AlertRow {
            opened_by_batch: before.map_or(batch, |b| b.opened_by_batch),
            meter_id,
            customer_id,
            kind: episode.kind.name().to_owned(),
            episode,
            threshold_hours: thresholds.of(episode.kind),
            closed_by_batch,
        });
    }
    kept.sort_by(|a, b| {
        (&a.meter_id, &a.kind, a.episode.first_hour).cmp(&(
            &b.meter_id,
            &b.kind,
            b.episode.first_hour,
        ))
    });
    kept
}

fn kind_of(name: &str) -> Option<AlertKind> {
    AlertKind::ALL.into_iter().find(|k| k.name() == name)
}

/// Column `name` of a table's rows, for reading them back.
fn column<'a>(rows: &'a DataFrame, table: &'static str, name: &str) -> Result<&'a Column> {
    rows.column(name)
        .map_err(|e| Error::table_data(table, name, e.to_string()))
}

fn read_alerts(table: &Table) -> Result<Vec<AlertRow>> {
    let rows = block_on(table.read_hours(&Default::default()))??;
    let name = METER_ALERTS.name;
    let bad = |c: &str, e: PolarsError| Error::table_data(name, c, e.to_string());
    let text = |c: &'static str| {
        column(&rows, name, c)?
            .str()
            .cloned()
            .map_err(|e| bad(c, e))
    };
    let long = |c: &'static str| {
        column(&rows, name, c)?
            .i64()
            .cloned()
            .map_err(|e| bad(c, e))
    };
    let (meters, customers, kinds) = (
        text(col::METER_ID)?,
        text(col::CUSTOMER_ID)?,
        text(col::KIND)?,
    );
    let (first, last) = (long(col::FIRST_HOUR)?, long(col::LAST_HOUR)?);
    let open = column(&rows, name, col::IS_OPEN)?
        .bool()
        .cloned()
        .map_err(|e| bad(col::IS_OPEN, e))?;
    let (hours, usage, threshold) = (
        long(col::HOURS)?,
        long(col::USAGE_ML)?,
        long(col::THRESHOLD_HOURS)?,
    );
    let (opened, closed) = (long(col::OPENED_BY_BATCH)?, long(col::CLOSED_BY_BATCH)?);
    (0..rows.height())
        .map(|i| {
            let missing = |c: &str| Error::table_data(name, c, format!("row {i} has no value"));
            let kind_name = kinds.get(i).ok_or_else(|| missing(col::KIND))?;
            let kind = kind_of(kind_name).ok_or_else(|| {
                Error::table_data(
                    name,
                    col::KIND,
                    format!("`{kind_name}` is not a kind of alert"),
                )
            })?;
            let long_at = |c: &'static str, v: &Int64Chunked| v.get(i).ok_or_else(|| missing(c));
            Ok(AlertRow {
                meter_id: meters
                    .get(i)
                    .ok_or_else(|| missing(col::METER_ID))?
                    .to_owned(),
                customer_id: customers
                    .get(i)
                    .ok_or_else(|| missing(col::CUSTOMER_ID))?
                    .to_owned(),
                kind: kind_name.to_owned(),
                episode: Episode {
                    kind,
                    first_hour: long_at(col::FIRST_HOUR, &first)?,
                    last_hour: long_at(col::LAST_HOUR, &last)?,
                    open: open.get(i).ok_or_else(|| missing(col::IS_OPEN))?,
                    hours: long_at(col::HOURS, &hours)?,
                    usage_ml: long_at(col::USAGE_ML, &usage)?,
                },
                threshold_hours: long_at(col::THRESHOLD_HOURS, &threshold)?,
                opened_by_batch: long_at(col::OPENED_BY_BATCH, &opened)?,
                closed_by_batch: closed.get(i),
            })
        })
        .collect()
}

fn alerts_frame(rows: &[AlertRow]) -> Result<DataFrame> {
    let long = |f: &dyn Fn(&AlertRow) -> i64| Values::Long(rows.iter().map(f).collect());
    let closed: Int64Chunked = rows.iter().map(|r| r.closed_by_batch).collect();
    METER_ALERTS.frame(vec![
        Values::Str(rows.iter().map(|r| r.meter_id.as_str().into()).collect()),
        Values::Str(rows.iter().map(|r| r.customer_id.as_str().into()).collect()),
        Values::Str(rows.iter().map(|r| r.kind.as_str().into()).collect()),
        long(&|r| r.episode.first_hour),
        long(&|r| r.episode.last_hour),
        Values::Bool(rows.iter().map(|r| r.episode.open).collect()),
        long(&|r| r.episode.hours),
        long(&|r| r.episode.usage_ml),
        long(&|r| r.threshold_hours),
        long(&|r| r.opened_by_batch),
        Values::Built(closed.with_name(col::CLOSED_BY_BATCH.into()).into_column()),
    ])
}

/// What the parts of a meter's history are called in `alert_meters`.
const HEARD: &str = "heard";
const QUIET: &str = "quiet";
const FLOW: &str = "flow";
const DRY: &str = "dry";
const MONTH: &str = "month";

/// One `alert_meters` row: part, first and last hour, hours, usage.
type Part<'a> = (&'a str, i64, i64, i64, i64);

fn read_histories(table: &Table, tz: chrono_tz::Tz) -> Result<FastMap<i64, History>> {
    let rows = block_on(table.read_hours(&Default::default()))??;
    let name = ALERT_METERS.name;
    let long = |c: &'static str| long_values(&rows, c, name);
    let parts = column(&rows, name, col::PART)?
        .str()
        .cloned()
        .map_err(|e| Error::table_data(name, col::PART, e.to_string()))?;
    let (meters, customers) = (long(col::METER)?, long(col::CUSTOMER)?);
    let (first, last) = (long(col::FIRST_HOUR)?, long(col::LAST_HOUR)?);
    let (hours, usage) = (long(col::HOURS)?, long(col::USAGE_ML)?);
    type Runs = (Vec<FlowRun>, Vec<(i64, i64)>);
    let mut runs: FastMap<i64, Runs> = FastMap::default();
    let mut out: FastMap<i64, History> = FastMap::default();
    let mut quiet: Vec<(i64, i64, (i64, i64))> = Vec::new();
    let columns = meters
        .iter()
        .zip(customers.iter())
        .zip(parts.iter())
        .zip(first.iter())
        .zip(last.iter())
        .zip(hours.iter())
        .zip(usage.iter());
    for ((((((&meter, &customer), part), &a), &b), &n), &ml) in columns {
        let history = out.entry(meter).or_default();
        match part {
            Some(HEARD) => {
                history.customer = customer;
                history.hearing = Some(Hearing {
                    last_heard: a,
                    quiet: 0,
                    quiet_span: None,
                });
            }
            Some(QUIET) => quiet.push((meter, n, (a, b))),
            Some(FLOW) => runs.entry(meter).or_default().0.push(FlowRun {
                first: a,
                last: b,
                hours: n,
                usage_ml: ml,
            }),
            Some(DRY) => runs.entry(meter).or_default().1.push((a, b)),
            Some(MONTH) => {
                let end = b + 1;
                if month_end_hour(month_start_hour(b, tz)?, tz)? != end {
                    return Err(Error::table_data(
                        name,
                        col::LAST_HOUR,
                        format!("meter {meter}: hour {b} is not the last of a billing month"),
                    ));
                }
                history.months.insert(
                    end,
                    MonthTally {
                        end,
                        first: a,
                        hours: n,
                        usage_ml: ml,
                    },
                );
            }
            other => {
                return Err(Error::table_data(
                    name,
                    col::PART,
                    format!("{other:?} is not a part of a meter's history"),
                ));
            }
        }
    }
    for (meter, n, span) in quiet {
        match out.get_mut(&meter).and_then(|h| h.hearing.as_mut()) {
            Some(hearing) => {
                hearing.quiet = n;
                hearing.quiet_span = Some(span);
            }
            None => {
                return Err(Error::table_data(
                    name,
                    col::PART,
                    format!("meter {meter} has quiet folders but no `heard` row"),
                ));
            }
        }
    }
    for (meter, (flow, dry)) in runs {
        let history = out.entry(meter).or_default();
        history.flow = FlowHistory::from_runs(flow, dry)
            .map_err(|e| Error::table_data(name, col::PART, format!("meter {meter}: {}", e.0)))?;
    }
    Ok(out)
}

fn histories_frame(meters: &FastMap<i64, History>) -> Result<DataFrame> {
    let mut keys: Vec<i64> = meters.keys().copied().collect();
    keys.sort_unstable();
    let mut rows: Vec<(i64, i64, Part<'_>)> = Vec::new();
    for meter in keys {
        let h = &meters[&meter];
        let mut push = |part: Part<'static>| rows.push((meter, h.customer, part));
        if let Some(hearing) = h.hearing {
            let heard = hearing.last_heard;
            push((HEARD, heard, heard, 0, 0));
            if let Some((first, last)) = hearing.quiet_span {
                push((QUIET, first, last, hearing.quiet, 0));
            }
        }
        for run in h.flow.flow_runs() {
            push((
                FLOW,
                run.first,
                run.last,
                run.last - run.first + 1,
                run.usage_ml,
            ));
        }
        for &(a, b) in h.flow.dry_runs() {
            push((DRY, a, b, b - a + 1, 0));
        }
        for m in h.months.values() {
            push((MONTH, m.first, m.end - 1, m.hours, m.usage_ml));
        }
    }
    ALERT_METERS.frame(vec![
        Values::Long(rows.iter().map(|r| r.0).collect()),
        Values::Long(rows.iter().map(|r| r.1).collect()),
        Values::Str(rows.iter().map(|r| r.2.0.into()).collect()),
        Values::Long(rows.iter().map(|r| r.2.1).collect()),
        Values::Long(rows.iter().map(|r| r.2.2).collect()),
        Values::Long(rows.iter().map(|r| r.2.3).collect()),
        Values::Long(rows.iter().map(|r| r.2.4).collect()),
    ])
}
