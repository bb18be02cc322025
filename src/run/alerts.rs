//! The alerts, the first part of the finish step: what each meter's history (`alert_meters`)
//! knows is brought up to date with the batch (the hours its accepted readings fall in, the
//! folders its records came in), every episode that history still decides is judged again with
//! the run's thresholds, and `meter_alerts` is rewritten with them beside the final ones. Two
//! commits, `meter_alerts` first: a rerun after a crash between them reads the history as the
//! crashed attempt did and writes the same one.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;

use super::cores::per_chunk;
use super::history::{
    History, MonthStarts, StoredRow, decode_row, encode_into, histories_frame, read_stored,
    stored_rows,
};
use super::{Run, Stage, keys};
use crate::error::{Error, Result};
use crate::hashing::{FastMap, FastSet};
use crate::hours::{month_end_hour, month_start_hour};
use crate::input::{INGEST_HOUR, Parsed};
use crate::query::alerts::{AlertKind, Episode, MonthTally, listen};
use crate::table::{METER_ALERTS, Table, Values, block_on, col, long_values};

/// What a batch holds of one meter: for its silence.
pub(super) struct Heard {
    /// Meter key (the batch's index of the meter, until [`Heard::keyed`]).
    pub meter: i64,
    /// The key of the customer of its last record in ingestion order (its batch index until
    /// [`Heard::keyed`]).
    pub customer: i64,
    /// The folders (ingestion hours) holding its records, ascending.
    pub folders: Vec<i64>,
}

impl Heard {
    /// The same with keys for the batch's indexes (`meters` and `customers`: the key of each
    /// index).
    pub(super) fn keyed(mut self, meters: &[i64], customers: &[i64]) -> Result<Self> {
        let key = |keys: &[i64], index: i64| {
            usize::try_from(index)
                .ok()
                .and_then(|i| keys.get(i).copied())
                .ok_or_else(|| Error::Dedup(format!("batch index {index} has no key")))
        };
        self.meter = key(meters, self.meter)?;
        self.customer = key(customers, self.customer)?;
        Ok(self)
    }
}

/// The meters of the parsed batch with the folders their records came in (meters and customers
/// as the batch's indexes): every valid record, accepted or not, is the meter talking.
pub(super) fn heard(parsed: &Parsed) -> Result<Vec<Heard>> {
    let records = &parsed.records;
    let long = |name: &str| long_values(records, name, "alerts");
    let (meters, customers, folders) =
        (long(col::METER)?, long(col::CUSTOMER)?, long(INGEST_HOUR)?);
    // By the batch's dense meter indexes: the customer of the last record, the first folder,
    // and the other folders (rare: one hour's files are one folder) beside.
    let n = parsed.meters.len();
    let mut customer = vec![0i64; n];
    let mut first: Vec<Option<i64>> = vec![None; n];
    let mut more: Vec<(usize, i64)> = Vec::new();
    for ((&meter, &c), &folder) in meters.iter().zip(customers.iter()).zip(folders.iter()) {
        let i = usize::try_from(meter)
            .ok()
            .filter(|&i| i < n)
            .ok_or_else(|| Error::Dedup(format!("meter index {meter} of {n} in the batch")))?;
        customer[i] = c;
        match first[i] {
            None => first[i] = Some(folder),
            Some(f) if f != folder => more.push((i, folder)),
            Some(_) => {}
        }
    }
    more.sort_unstable();
    more.dedup();
    let mut more = more.into_iter().peekable();
    let mut out = Vec::with_capacity(n);
    for (i, folder) in first.into_iter().enumerate() {
        let Some(folder) = folder else { continue };
        let mut folders = vec![folder];
        while let Some((_, f)) = more.next_if(|&(j, _)| j == i) {
            folders.push(f);
        }
        folders.sort_unstable();
        folders.dedup();
        out.push(Heard {
            meter: i as i64,
            customer: customer[i],
            folders,
        });
    }
    Ok(out)
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
#[derive(Clone, Copy)]
struct Decides {
    open: bool,
    flow: Option<Option<i64>>,
}

/// What the alert step takes of the batch.
pub(super) struct AlertInputs<'a> {
    batch: i64,
    /// The meters the batch holds records of.
    heard: &'a [Heard],
    /// The accepted readings (`meter`, `usage_hour`, `usage_ml`).
    accepted: &'a DataFrame,
    /// The `dedup_keys` rows stored before the batch and those new in it: every id known.
    key_rows: [&'a DataFrame; 2],
    /// Every customer key known after the batch, with its `customer_id`.
    customer_ids: &'a FastMap<i64, String>,
    /// The ingestion hours the batch takes that no earlier batch took, ascending.
    new_folders: Vec<i64>,
    /// The latest ingestion hour taken before the batch.
    before: Option<i64>,
    thresholds: Thresholds,
    /// The watermark after the batch.
    watermark: i64,
    tz: chrono_tz::Tz,
}

/// Both alert tables' rows after the batch (`meter_alerts`, `alert_meters`), or none when the
/// tables hold the batch already (a rerun after a crash: the crashed attempt's alerts stand).
type Judgement = Option<(DataFrame, DataFrame)>;

impl Run {
    /// What the alert step takes of the batch (classified by the dedup step).
    pub(super) fn alert_inputs(&self) -> Result<AlertInputs<'_>> {
        let Stage::Classified(classified) = &self.stage else {
            return Err(Error::StepOrder {
                step: "finish",
                needs: "dedup",
            });
        };
        let before = self.checkpoint.latest_ingest_hour;
        Ok(AlertInputs {
            batch: self.batch.plan.batch_id,
            heard: &classified.heard,
            accepted: &classified.accepted,
            key_rows: [&classified.stored_keys, &classified.new_keys],
            customer_ids: &classified.customer_ids,
            new_folders: (self.batch.plan.files.iter())
                .map(|f| f.ingest_hour)
                .filter(|&h| before.is_none_or(|b| h > b))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            before,
            thresholds: Thresholds {
                flow: self.config.alert_flow_hours,
                silent: self.config.alert_silent_hours,
                close: self.config.alert_close_hours,
            },
            watermark: self.batch.watermark_after.unwrap_or(i64::MIN),
            tz: self.config.billing_timezone,
        })
    }
}

/// Brings `alerts` (`meter_alerts`) and `histories` (the meters' alert histories) up to date
/// with the batch: judges it, then commits both tables.
pub(super) fn write_alerts(
    inputs: &AlertInputs<'_>,
    alerts: &mut Table,
    histories: &mut Table,
) -> Result<()> {
    let t = std::time::Instant::now();
    let batch = inputs.batch;
    let judged = judge_batch(inputs, alerts, histories);
    let p = crate::trace::phase("finish/alerts/judged", t);
    if let Some((alert_rows, history_rows)) = judged? {
        let old = alerts.appended_files(0);
        block_on(alerts.commit_removing(batch, Some(&alert_rows), &BTreeSet::new(), &old))??;
        let p = crate::trace::phase("finish/alerts/write alerts", p);
        let old = histories.appended_files(0);
        block_on(histories.commit_removing(batch, Some(&history_rows), &BTreeSet::new(), &old))??;
        // What the step used (stored, unpacked and packed histories: about 80 MB at
        // 100,000 meters) goes back to the system before the dedup state's write, which
        // makes the run's peak.
        drop(history_rows);
        crate::memory::release_freed();
        crate::trace::phase("finish/alerts/write histories", p);
    }
    Ok(())
}

/// The alert tables' rows after the batch described by `inputs`: each meter's stored history
/// (`histories`) brought up to date and judged, and the episodes it decides merged into the
/// stored alerts (`alerts`). Reads, and writes nothing.
fn judge_batch(
    inputs: &AlertInputs<'_>,
    alerts: &mut Table,
    histories: &mut Table,
) -> Result<Judgement> {
    let batch = inputs.batch;
    if block_on(histories.has_batch(batch))?? {
        // Both committed (the histories commit last).
        return Ok(None);
    }
    let t = std::time::Instant::now();
    let stored = read_stored(histories)?;
    let stored_meters = stored_rows(&stored)?;
    let old_rows = read_alerts(alerts)?;
    let p = crate::trace::phase("alerts/read", t);
    let meters = meters_to_update(stored_meters, inputs.heard)?;
    // The meters with stored alert rows, whose history says which of them it decides.
    let key_rows = inputs.key_rows;
    let with_ids: FastSet<&str> = old_rows.iter().map(|r| r.meter_id.as_str()).collect();
    let with_rows: FastSet<i64> = keys::meters_where(&key_rows, |id, _| with_ids.contains(id))?
        .into_iter()
        .map(|(_, key)| key)
        .collect();
    let accepted = Accepted::of(inputs.accepted)?;
    let judging = Judging {
        inputs,
        accepted: &accepted,
        with_rows: &with_rows,
    };
    let p = crate::trace::phase("alerts/batch", p);
    let updated = per_chunk(&meters, |chunk| judging.update_all(chunk));
    let p = crate::trace::phase("alerts/judge", p);
    let updated = updated.into_iter().collect::<Result<Vec<_>>>()?;
    // Every accepted reading is of a meter heard in the batch, so some chunk took it.
    if updated.iter().map(|c| c.taken).sum::<usize>() != accepted.meters.len() {
        return Err(accepted.unheard(&meters));
    }
    drop(meters);
    // The ids of the meters named: those with episodes or stored rows.
    let named: FastSet<i64> = updated
        .iter()
        .flat_map(|c| {
            c.episodes
                .iter()
                .map(|e| e.0)
                .chain(c.decides.iter().map(|d| d.0))
        })
        .collect();
    let ids = Ids {
        meters: keys::meters_where(&key_rows, |_, key| named.contains(&key))?
            .into_iter()
            .map(|(id, key)| (key, id))
            .collect(),
        customers: inputs.customer_ids,
    };
    let mut judged: Vec<Judged> = Vec::new();
    let mut decides: BTreeMap<String, Decides> = BTreeMap::new();
    let (mut meter_keys, mut customers, mut packed) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in &updated {
        for (meter, customer, episode) in &chunk.episodes {
            judged.push(Judged {
                meter_id: ids.meter(*meter)?.to_owned(),
                customer_id: ids.customer(*customer)?.to_owned(),
                episode: *episode,
            });
        }
        for (meter, decided) in &chunk.decides {
            decides.insert(ids.meter(*meter)?.to_owned(), *decided);
        }
        meter_keys.extend_from_slice(&chunk.keys);
        customers.extend_from_slice(&chunk.customers);
        let mut start = 0;
        for &end in &chunk.ends {
            packed.push(&chunk.bytes[start..end]);
            start = end;
        }
    }
    let rows = merge_alerts(old_rows, judged, &decides, batch, &inputs.thresholds);
    let alert_rows = alerts_frame(&rows)?;
    let history_rows = histories_frame(meter_keys, customers, &packed)?;
    drop(packed);
    drop(updated);
    drop(stored);
    crate::trace::phase("alerts/frames", p);
    Ok(Some((alert_rows, history_rows)))
}

/// The ids of the meter and customer keys known after the batch.
struct Ids<'a> {
    meters: FastMap<i64, String>,
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

/// The batch's accepted readings: the meter key, recording hour and usage of each.
struct Accepted<'a> {
    meters: Cow<'a, [i64]>,
    hours: Cow<'a, [i64]>,
    usage: Cow<'a, [i64]>,
}

impl<'a> Accepted<'a> {
    fn of(accepted: &'a DataFrame) -> Result<Self> {
        let long = |name: &str| long_values(accepted, name, "alerts");
        Ok(Self {
            meters: long(col::METER)?,
            hours: long(col::USAGE_HOUR)?,
            usage: long(col::USAGE_ML)?,
        })
    }

    /// The readings of `chunk`'s meters (in key order), grouped by meter in the batch's order:
    /// counted per meter, then placed (a counting sort); a key is looked up only when it lies
    /// in the chunk's range.
    fn of_chunk(&self, chunk: &[Meter<'_>]) -> Result<ChunkReadings> {
        let mut starts = vec![0usize; chunk.len() + 1];
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
            return Ok(ChunkReadings {
                starts,
                readings: Vec::new(),
            });
        };
        let (low, high) = (first.meter, last.meter);
        let position = Positions::of(chunk.iter().map(|m| m.meter), low, high);
        let in_chunk = |meter: &i64| (low..=high).contains(meter);
        for &meter in self.meters.iter().filter(|m| in_chunk(m)) {
            let at = position.get(meter).ok_or_else(|| unheard(meter))?;
            starts[at + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut readings = vec![(0i64, 0i64); starts[chunk.len()]];
        for (row, &meter) in self.meters.iter().enumerate() {
            if in_chunk(&meter)
                && let Some(at) = position.get(meter)
            {
                readings[next[at]] = (self.hours[row], self.usage[row]);
                next[at] += 1;
            }
        }
        Ok(ChunkReadings { starts, readings })
    }

    /// The error for an accepted reading of a meter not among `meters` (in key order).
    fn unheard(&self, meters: &[Meter<'_>]) -> Error {
        let meter = self
            .meters
            .iter()
            .copied()
            .find(|&k| meters.binary_search_by_key(&k, |m| m.meter).is_err());
        match meter {
            Some(meter) => unheard(meter),
            None => Error::Dedup("accepted readings taken twice by the alerts".to_owned()),
        }
    }
}

fn unheard(meter: i64) -> Error {
    Error::Dedup(format!(
        "meter key {meter} has accepted readings but no record among those heard"
    ))
}

/// Where each of a chunk's meter keys (ascending, from `low` to `high`) stands in the chunk:
/// an array by key when the keys are dense (as `keys::assign` makes them: consecutive, meters
/// and customers mixed), a hash map when they are spread.
enum Positions {
    Dense { low: i64, at: Vec<u32> },
    Spread(FastMap<i64, usize>),
}

impl Positions {
    /// Unused slots of the dense array.
    const NONE: u32 = u32::MAX;

    fn of(keys: impl ExactSizeIterator<Item = i64>, low: i64, high: i64) -> Self {
        let count = keys.len();
        let span = high.abs_diff(low);
        let dense =
            u32::try_from(count).is_ok_and(|n| n < Self::NONE) && span < 4 * count as u64 + 1024;
        if !dense {
            return Self::Spread(keys.enumerate().map(|(i, key)| (key, i)).collect());
        }
        let mut at = vec![Self::NONE; span as usize + 1];
        for (i, key) in keys.enumerate() {
            // Below NONE, checked above; the key lies in low..=high.
            at[key.abs_diff(low) as usize] = i as u32;
        }
        Self::Dense { low, at }
    }

    /// The position of `key`, which lies in `low..=high`.
    fn get(&self, key: i64) -> Option<usize> {
        match self {
            Self::Dense { low, at } => {
                let i = *at.get(key.abs_diff(*low) as usize)?;
                (i != Self::NONE).then_some(i as usize)
            }
            Self::Spread(map) => map.get(&key).copied(),
        }
    }
}

/// A chunk's accepted readings as `(hour, ml)`, grouped by meter: its `i`th meter's are
/// `readings[starts[i]..starts[i + 1]]`, copied so that a meter's lie together (read from the
/// batch's columns by row, they cost a cache miss each).
struct ChunkReadings {
    starts: Vec<usize>,
    readings: Vec<(i64, i64)>,
}

impl ChunkReadings {
    /// The `(hour, ml)` of the chunk's `i`th meter's readings, in the batch's order.
    fn of(&self, i: usize) -> &[(i64, i64)] {
        &self.readings[self.starts[i]..self.starts[i + 1]]
    }
}

/// The meters to bring up to date, in key order: those with a stored history (`stored`, in key
/// order) and those heard in the batch (`heard`, in key order: the dedup step sorts them), each
/// once, with what the batch heard of it.
fn meters_to_update<'a>(stored: Vec<StoredRow<'a>>, heard: &'a [Heard]) -> Result<Vec<Meter<'a>>> {
    if let Some(w) = heard.windows(2).find(|w| w[0].meter >= w[1].meter) {
        return Err(Error::Dedup(format!(
            "the batch's meters are not in strictly increasing key order: key {} after {} \
             (one key standing for two meters, or unsorted)",
            w[1].meter, w[0].meter
        )));
    }
    let only_heard = |h: &'a Heard| Meter {
        meter: h.meter,
        customer: h.customer,
        packed: None,
        heard: Some(h),
    };
    let mut heard = heard.iter().peekable();
    let mut out = Vec::with_capacity(stored.len() + heard.len());
    for (meter, customer, packed) in stored {
        while let Some(h) = heard.next_if(|h| h.meter < meter) {
            out.push(only_heard(h));
        }
        out.push(Meter {
            meter,
            customer,
            packed: Some(packed),
            heard: heard.next_if(|h| h.meter == meter),
        });
    }
    out.extend(heard.map(only_heard));
    Ok(out)
}

/// A meter to bring up to date: its key, its customer's key (stored, or of the batch's last
/// record of it), its stored history and what the batch heard of it, if any.
struct Meter<'a> {
    meter: i64,
    customer: i64,
    packed: Option<&'a [u8]>,
    heard: Option<&'a Heard>,
}

/// What the run judges by, the same for every meter, and the batch.
struct Judging<'a> {
    inputs: &'a AlertInputs<'a>,
    /// The batch's accepted readings.
    accepted: &'a Accepted<'a>,
    /// The meters with stored `meter_alerts` rows.
    with_rows: &'a FastSet<i64>,
}

/// A chunk of meters after the batch: the episodes judged now (with meter and customer key),
/// what their stored histories decided, the histories packed back to back (`ends`: where
/// each ends in `bytes`) with their keys, and how many accepted readings the chunk took.
#[derive(Default)]
struct Updated {
    taken: usize,
    episodes: Vec<(i64, i64, Episode)>,
    decides: Vec<(i64, Decides)>,
    keys: Vec<i64>,
    customers: Vec<i64>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Judging<'_> {
    /// Every meter of `chunk` brought up to date with the batch, one at a time: its history
    /// unpacked, updated, judged and packed again.
    fn update_all(&self, chunk: &[Meter<'_>]) -> Result<Updated> {
        let mut out = Updated::default();
        let mut months = MonthStarts::new(self.inputs.tz);
        let batch = self.accepted.of_chunk(chunk)?;
        out.taken = batch.readings.len();
        // Each hour's billing month, worked out once; a meter's readings summed by hour.
        let mut month_ends: FastMap<i64, i64> = FastMap::default();
        let mut hours: Vec<(i64, i64, i64)> = Vec::new();
        for (i, m) in chunk.iter().enumerate() {
            let mut history = match m.packed {
                Some(bytes) => decode_row(m.meter, m.customer, bytes, &mut months)?,
                None => History {
                    customer: m.customer,
                    ..History::default()
                },
            };
            if self.with_rows.contains(&m.meter) {
                // What the history decides of those rows, as it was before the batch: the flow
                // episodes after its floor (all, if it begins with flow; none without flow or
                // dry hours), and its open silences and bills at risk if it was stored.
                let stored = m.packed.is_some();
                let decided = Decides {
                    open: stored,
                    flow: (stored && !history.flow.is_empty()).then(|| history.flow.floor()),
                };
                out.decides.push((m.meter, decided));
            }
            if let Some(h) = m.heard {
                history.customer = h.customer;
            }
            hours.clear();
            for &(hour, ml) in batch.of(i) {
                // A meter's readings of a batch fall in a few hours: a short list, searched.
                match hours.iter_mut().find(|(h, _, _)| *h == hour) {
                    Some((_, sum, _)) => *sum += ml,
                    None => {
                        let end = match month_ends.get(&hour) {
                            Some(&end) => end,
                            None => {
                                let end = month_end_hour(
                                    month_start_hour(hour, self.inputs.tz)?,
                                    self.inputs.tz,
                                )?;
                                month_ends.insert(hour, end);
                                end
                            }
                        };
                        hours.push((hour, ml, end));
                    }
                }
            }
            let folders = m.heard.map_or(&[][..], |h| h.folders.as_slice());
            for episode in self.update(&mut history, &hours, folders)? {
                out.episodes.push((m.meter, history.customer, episode));
            }
            encode_into(&history, &mut out.bytes);
            out.ends.push(out.bytes.len());
            out.keys.push(m.meter);
            out.customers.push(history.customer);
        }
        Ok(out)
    }

    /// Brings a meter's history up to date with the batch (`hours`: its accepted readings
    /// summed by recording hour, with the end of the hour's billing month; `heard`: the folders
    /// holding its records), judges every
    /// episode the history decides, then forgets what the watermark made final (flow before
    /// the last dry hour before it, and the months it closed: their rows are final).
    fn update(
        &self,
        history: &mut History,
        hours: &[(i64, i64, i64)],
        heard: &[i64],
    ) -> Result<Vec<Episode>> {
        for &(hour, ml, end) in hours {
            let new_hour = !history.flow.has_readings(hour);
            history.flow.add(hour, ml);
            history
                .months
                .entry(end)
                .or_insert_with(|| MonthTally::new(end, hour))
                .add(hour, ml, new_hour);
        }
        let t = &self.inputs.thresholds;
        let (hearing, mut episodes) = listen(
            history.hearing,
            &self.inputs.new_folders,
            heard,
            self.inputs.before,
            t.silent,
        );
        history.hearing = hearing;
        episodes.extend(history.flow.episodes(t.flow));
        episodes.extend(
            history
                .months
                .values()
                .filter_map(|m| m.judge(self.inputs.watermark, t.close)),
        );
        history.flow.forget_before(self.inputs.watermark);
        history
            .months
            .retain(|_, m| !m.closed(self.inputs.watermark));
        Ok(episodes)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_is_heard_in_every_folder_of_its_records() -> Result<()> {
        // Meter 0 in folders 5, 3 and 5 (its last record for customer 1); meter 2 in folder 4;
        // meter 1 has no valid record.
        let records = df!(
            col::METER => [0i64, 2, 0, 0],
            col::CUSTOMER => [0i64, 0, 1, 1],
            INGEST_HOUR => [5i64, 4, 3, 5],
        )
        .map_err(Error::polars("test"))?;
        let parsed = Parsed {
            records,
            meters: vec!["M0".into(), "M1".into(), "M2".into()],
            customers: vec!["C0".into(), "C1".into()],
            quarantined: Vec::new(),
            lines_read: 4,
        };
        let heard: Vec<(i64, i64, Vec<i64>)> = heard(&parsed)?
            .into_iter()
            .map(|h| h.keyed(&[10, 11, 12], &[20, 21]))
            .map(|h| h.map(|h| (h.meter, h.customer, h.folders)))
            .collect::<Result<_>>()?;
        assert_eq!(heard, vec![(10, 21, vec![3, 5]), (12, 20, vec![4])]);
        Ok(())
    }

    fn heard_of(meter: i64, customer: i64) -> Heard {
        Heard {
            meter,
            customer,
            folders: vec![meter * 10],
        }
    }

    #[test]
    fn stored_and_heard_meters_are_merged_in_key_order_each_once() -> Result<()> {
        let packed: [&[u8]; 3] = [b"a", b"d", b"g"];
        let stored = vec![
            (1, 100, packed[0]),
            (4, 400, packed[1]),
            (7, 700, packed[2]),
        ];
        // Meter 4 stored and heard (by another customer now).
        let heard = vec![heard_of(0, 0), heard_of(4, 41), heard_of(9, 9)];
        // Key, customer, stored history and the first folder heard in.
        type Merged<'a> = (i64, i64, Option<&'a [u8]>, Option<i64>);
        let merged: Vec<Merged<'_>> = meters_to_update(stored.clone(), &heard)?
            .iter()
            .map(|m| (m.meter, m.customer, m.packed, m.heard.map(|h| h.folders[0])))
            .collect();
        assert_eq!(
            merged,
            vec![
                (0, 0, None, Some(0)),
                (1, 100, Some(packed[0]), None),
                (4, 400, Some(packed[1]), Some(40)),
                (7, 700, Some(packed[2]), None),
                (9, 9, None, Some(90)),
            ]
        );
        // Two of the batch's meters with one key, or meters out of key order: refused.
        let twice = vec![heard_of(4, 1), heard_of(4, 2)];
        assert!(meters_to_update(stored.clone(), &twice).is_err());
        let unsorted = vec![heard_of(9, 9), heard_of(4, 41)];
        assert!(meters_to_update(stored, &unsorted).is_err());
        Ok(())
    }

    #[test]
    fn positions_are_found_by_array_when_keys_are_dense_and_by_map_when_spread() {
        let dense = Positions::of([10i64, 12, 13].into_iter(), 10, 13);
        assert!(matches!(dense, Positions::Dense { .. }));
        let spread_keys = [-(1i64 << 40), 5, 1 << 40];
        let spread = Positions::of(spread_keys.into_iter(), -(1 << 40), 1 << 40);
        assert!(matches!(spread, Positions::Spread(_)));
        let found =
            |p: &Positions, keys: &[i64]| keys.iter().map(|&k| p.get(k)).collect::<Vec<_>>();
        assert_eq!(
            found(&dense, &[10, 11, 12, 13]),
            vec![Some(0), None, Some(1), Some(2)]
        );
        assert_eq!(
            found(&spread, &[-(1 << 40), 4, 5, 1 << 40]),
            vec![Some(0), None, Some(1), Some(2)]
        );
    }

    #[test]
    fn a_chunk_takes_the_readings_of_its_meters_grouped_by_meter_in_batch_order() -> Result<()> {
        let rows = df!(
            col::METER => [5i64, 3, 5, 9, 3, 1],
            col::USAGE_HOUR => [100i64, 101, 102, 103, 104, 105],
            col::USAGE_ML => [1i64, 2, 3, 4, 5, 6],
        )
        .map_err(Error::polars("test"))?;
        let accepted = Accepted::of(&rows)?;
        let meter = |meter| Meter {
            meter,
            customer: 0,
            packed: None,
            heard: None,
        };
        // Meters 3, 5 and 6 (no readings); 1 and 9 lie outside the chunk's keys.
        let chunk = [meter(3), meter(5), meter(6)];
        let taken = accepted.of_chunk(&chunk)?;
        let of = |i| taken.of(i).to_vec();
        assert_eq!(of(0), vec![(101, 2), (104, 5)]);
        assert_eq!(of(1), vec![(100, 1), (102, 3)]);
        assert_eq!(of(2), vec![]);
        assert_eq!(taken.readings.len(), 4);
        // A reading of a meter within the chunk's keys that is not one of its meters.
        assert!(accepted.of_chunk(&[meter(3), meter(9)]).is_err());
        // One outside every chunk: found after the chunks, by the count they took.
        let all = [meter(3), meter(5), meter(9)];
        assert!(matches!(accepted.unheard(&all), Error::Dedup(m) if m.contains("meter key 1 ")));
        assert!(accepted.of_chunk(&[]).is_ok_and(|c| c.readings.is_empty()));
        Ok(())
    }
}
