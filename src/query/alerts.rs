//! Meter health, judged from what the runs have taken so far: the episodes of continuous flow
//! (a leak suspected) and of silence of one meter, each a pure function of the data, never of
//! how the log was split into runs. No I/O: the run step that keeps a meter's history and the
//! `meter_alerts` rows reads and writes them.
//!
//! - **Flow.** Each UTC recording hour of a meter is *flow* (its accepted readings sum to more
//!   than 0), *dry* (readings that sum to 0) or *unknown* (no readings). An episode of
//!   continuous flow is a stretch of hours with no dry hour in it holding at least the
//!   threshold's number of flow hours; unknown hours neither count nor end it. [`FlowHistory`]
//!   keeps a meter's flow hours as runs of consecutive hours with their usage, and its dry
//!   hours as runs, for the hours late readings can still change (those the watermark has not
//!   passed) and the stretch that reaches back from them to the last dry hour before the
//!   watermark. Adding an hour's readings is exact in any order, so a late reading that fills a
//!   gap, adds a dry hour or turns a dry hour into flow opens, splits, joins or closes episodes
//!   as the whole data says.
//! - **Bills at risk.** A meter's billing month is judged once the watermark is within the
//!   threshold's hours of the month's end (or past it): hours from its first reading of the
//!   month to the month's end without readings put the customer's bill at risk. The month's
//!   [`MonthTally`] counts the hours with readings as they arrive.
//! - **Silence.** A meter that reported before is *silent* once the threshold's number of
//!   ingestion hours taken (folders of the log, in order, counted per batch) passed without any
//!   record of it; the episode closes at the first folder with one. [`Hearing`] is what a meter's
//!   silence needs between batches: the folder it was last heard in and the quiet folders since.

/// What an episode is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertKind {
    /// Flow in every hour with readings for at least the threshold's hours: a leak suspected.
    ContinuousFlow,
    /// No record for at least the threshold's ingestion hours.
    Silent,
    /// Hours without readings in a billing month about to close, or closed.
    BillAtRisk,
}

impl AlertKind {
    /// The name the `meter_alerts` table stores.
    pub fn name(self) -> &'static str {
        match self {
            Self::ContinuousFlow => "continuous_flow",
            Self::Silent => "silent",
            Self::BillAtRisk => "bill_at_risk",
        }
    }

    /// Every kind.
    pub const ALL: [Self; 3] = [Self::ContinuousFlow, Self::Silent, Self::BillAtRisk];
}

/// One episode of one meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Episode {
    /// What it is about.
    pub kind: AlertKind,
    /// First hour (a recording hour for flow, an ingestion hour for silence).
    pub first_hour: i64,
    /// Last hour so far.
    pub last_hour: i64,
    /// No hour has ended it yet (a dry hour for flow, a record for silence).
    pub open: bool,
    /// The hours it counted: flow hours, quiet ingestion hours, or hours without readings.
    pub hours: i64,
    /// The meter's usage over the episode's hours, ml (0 for silence).
    pub usage_ml: i64,
}

/// Consecutive flow hours of a meter and what its readings in them sum to; before the
/// watermark, the flow hours of a stretch with gaps (final, so the gaps no longer matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRun {
    /// First hour.
    pub first: i64,
    /// Last hour.
    pub last: i64,
    /// Flow hours from the first to the last: all of them, but in a run the watermark merged.
    pub hours: i64,
    /// Sum of the accepted readings of the run's hours, ml (more than 0 in every hour).
    pub usage_ml: i64,
}

/// The hours of one meter that its flow episodes can still depend on: runs of flow hours and
/// runs of dry hours, each sorted, maximal (no two runs of one kind adjacent) and disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowHistory {
    flow: Vec<FlowRun>,
    dry: Vec<(i64, i64)>,
}

/// Why a stored history cannot be taken as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHistory(pub &'static str);

impl FlowHistory {
    /// A history from stored runs (any order); refused when runs overlap, touch their own kind
    /// or are empty, or a flow run's usage is not positive in total.
    pub fn from_runs(mut flow: Vec<FlowRun>, mut dry: Vec<(i64, i64)>) -> Result<Self, BadHistory> {
        // Stored runs come sorted: checked, and sorted only when they are not.
        if !flow.is_sorted_by_key(|r| r.first) {
            flow.sort_by_key(|r| r.first);
        }
        if !dry.is_sorted() {
            dry.sort_unstable();
        }
        let valid_flow = flow.iter().all(|r| {
            r.first <= r.last && (1..=r.last - r.first + 1).contains(&r.hours) && r.usage_ml > 0
        }) && flow.windows(2).all(|w| w[0].last + 1 < w[1].first);
        let valid_dry =
            dry.iter().all(|&(a, b)| a <= b) && dry.windows(2).all(|w| w[0].1 + 1 < w[1].0);
        if !valid_flow {
            return Err(BadHistory("flow runs overlap, touch or are empty"));
        }
        if !valid_dry {
            return Err(BadHistory("dry runs overlap, touch or are empty"));
        }
        // Both kinds sorted and disjoint: one walk finds, for each flow run, the first dry run
        // that does not end before it, which shares an hour with it if it starts by its end.
        let mut dry_runs = dry.iter().peekable();
        for run in &flow {
            while dry_runs.next_if(|d| d.1 < run.first).is_some() {}
            if dry_runs.peek().is_some_and(|d| d.0 <= run.last) {
                return Err(BadHistory("a flow run and a dry run share an hour"));
            }
        }
        Ok(Self { flow, dry })
    }

    /// The flow runs, in hour order.
    pub fn flow_runs(&self) -> &[FlowRun] {
        &self.flow
    }

    /// The dry runs (first and last hour), in hour order.
    pub fn dry_runs(&self) -> &[(i64, i64)] {
        &self.dry
    }

    /// Nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.flow.is_empty() && self.dry.is_empty()
    }

    /// Whether `hour` has readings (flow or dry) as far as the history knows: every hour the
    /// watermark has not passed is known.
    pub fn has_readings(&self, hour: i64) -> bool {
        self.flow_run_at(hour).is_some() || self.dry_run_at(hour).is_some()
    }

    fn flow_run_at(&self, hour: i64) -> Option<usize> {
        let i = self
            .flow
            .partition_point(|r| r.first <= hour)
            .checked_sub(1)?;
        (self.flow[i].last >= hour).then_some(i)
    }

    fn dry_run_at(&self, hour: i64) -> Option<usize> {
        let i = self.dry.partition_point(|r| r.0 <= hour).checked_sub(1)?;
        (self.dry[i].1 >= hour).then_some(i)
    }

    /// Adds readings of `hour` that sum to `usage_ml` (at least 0): what a batch accepted of the
    /// meter in that hour. The result depends only on each hour's total, whatever the order.
    pub fn add(&mut self, hour: i64, usage_ml: i64) {
        if let Some(i) = self.flow_run_at(hour) {
            self.flow[i].usage_ml += usage_ml;
            return;
        }
        let dry = self.dry_run_at(hour);
        if usage_ml == 0 {
            if dry.is_none() {
                self.insert_dry(hour);
            }
            return;
        }
        if let Some(j) = dry {
            self.remove_dry(j, hour);
        }
        self.insert_flow(hour, usage_ml);
    }

    fn insert_flow(&mut self, hour: i64, usage_ml: i64) {
        let at = self.flow.partition_point(|r| r.first < hour);
        let joins_left = at > 0 && self.flow[at - 1].last + 1 == hour;
        let joins_right = self.flow.get(at).is_some_and(|r| r.first == hour + 1);
        match (joins_left, joins_right) {
            (true, true) => {
                let right = self.flow.remove(at);
                let left = &mut self.flow[at - 1];
                left.last = right.last;
                left.hours += 1 + right.hours;
                left.usage_ml += usage_ml + right.usage_ml;
            }
            (true, false) => {
                let left = &mut self.flow[at - 1];
                left.last = hour;
                left.hours += 1;
                left.usage_ml += usage_ml;
            }
            (false, true) => {
                let right = &mut self.flow[at];
                right.first = hour;
                right.hours += 1;
                right.usage_ml += usage_ml;
            }
            (false, false) => self.flow.insert(
                at,
                FlowRun {
                    first: hour,
                    last: hour,
                    hours: 1,
                    usage_ml,
                },
            ),
        }
    }

    fn insert_dry(&mut self, hour: i64) {
        let at = self.dry.partition_point(|r| r.0 < hour);
        let joins_left = at > 0 && self.dry[at - 1].1 + 1 == hour;
        let joins_right = self.dry.get(at).is_some_and(|r| r.0 == hour + 1);
        match (joins_left, joins_right) {
            (true, true) => {
                let right = self.dry.remove(at);
                self.dry[at - 1].1 = right.1;
            }
            (true, false) => self.dry[at - 1].1 = hour,
            (false, true) => self.dry[at].0 = hour,
            (false, false) => self.dry.insert(at, (hour, hour)),
        }
    }

    fn remove_dry(&mut self, j: usize, hour: i64) {
        let (a, b) = self.dry[j];
        match (a == hour, b == hour) {
            (true, true) => {
                self.dry.remove(j);
            }
            (true, false) => self.dry[j].0 = hour + 1,
            (false, true) => self.dry[j].1 = hour - 1,
            (false, false) => {
                self.dry[j].1 = hour - 1;
                self.dry.insert(j + 1, (hour + 1, b));
            }
        }
    }

    /// The episodes of continuous flow the history holds: stretches without a dry hour with at
    /// least `min_hours` flow hours, in hour order. The last one is open unless a dry hour
    /// follows it.
    pub fn episodes(&self, min_hours: i64) -> Vec<Episode> {
        let mut out = Vec::new();
        let mut dry = self.dry.iter().peekable();
        let mut stretch: Option<Episode> = None;
        for run in &self.flow {
            // A dry hour before this run ends the stretch before it.
            let mut ended = false;
            while dry.next_if(|d| d.0 < run.first).is_some() {
                ended = true;
            }
            if ended && let Some(done) = stretch.take() {
                keep(&mut out, done, false, min_hours);
            }
            match &mut stretch {
                Some(s) => {
                    s.last_hour = run.last;
                    s.hours += run.hours;
                    s.usage_ml += run.usage_ml;
                }
                None => {
                    stretch = Some(Episode {
                        kind: AlertKind::ContinuousFlow,
                        first_hour: run.first,
                        last_hour: run.last,
                        open: true,
                        hours: run.hours,
                        usage_ml: run.usage_ml,
                    });
                }
            }
        }
        if let Some(last) = stretch {
            let open = dry.peek().is_none();
            keep(&mut out, last, open, min_hours);
        }
        out
    }

    /// The first hour whose episodes this history still decides: the first hour it holds if
    /// that is a dry hour (every episode before it is final), `None` when it begins with flow
    /// (every episode of the meter is its).
    pub fn floor(&self) -> Option<i64> {
        let dry = self.dry.first()?;
        match self.flow.first() {
            Some(run) if run.first < dry.0 => None,
            _ => Some(dry.0),
        }
    }

    /// Forgets what the watermark `watermark` made final and no later hour depends on: every
    /// run before the last dry hour before the watermark, which is kept as the floor. The flow
    /// runs after the floor that begin before the watermark are one stretch (no dry hour
    /// between them) whose gaps are final: they become one run, so that a meter that flows for
    /// months with gaps keeps one.
    pub fn forget_before(&mut self, watermark: i64) {
        let i = self.dry.partition_point(|r| r.0 < watermark);
        if let Some(at) = i.checked_sub(1) {
            let floor = self.dry[at].1.min(watermark - 1);
            self.dry.drain(..at);
            self.dry[0].0 = floor;
            let keep_from = self.flow.partition_point(|r| r.last < floor);
            self.flow.drain(..keep_from);
        }
        let before = self.flow.partition_point(|r| r.first < watermark);
        if before > 1 {
            let merged = self.flow[..before].iter().copied().reduce(|a, b| FlowRun {
                first: a.first,
                last: b.last,
                hours: a.hours + b.hours,
                usage_ml: a.usage_ml + b.usage_ml,
            });
            if let Some(run) = merged {
                self.flow.splice(..before, [run]);
            }
        }
    }
}

fn keep(out: &mut Vec<Episode>, mut episode: Episode, open: bool, min_hours: i64) {
    if episode.hours >= min_hours {
        episode.open = open;
        out.push(episode);
    }
}

/// One meter's readings in one billing month, for its bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthTally {
    /// The month's first hour after its last (exclusive), UTC hour index.
    pub end: i64,
    /// The meter's first hour with readings in the month.
    pub first: i64,
    /// Hours of the month with readings.
    pub hours: i64,
    /// The meter's usage in the month, ml.
    pub usage_ml: i64,
}

impl MonthTally {
    /// A month of `end` whose first reading is in `hour`, with nothing counted yet.
    pub fn new(end: i64, hour: i64) -> Self {
        Self {
            end,
            first: hour,
            hours: 0,
            usage_ml: 0,
        }
    }

    /// Counts readings of `hour` summing to `usage_ml`; `new_hour` when the hour had none.
    pub fn add(&mut self, hour: i64, usage_ml: i64, new_hour: bool) {
        self.first = self.first.min(hour);
        self.hours += i64::from(new_hour);
        self.usage_ml += usage_ml;
    }

    /// The month is final: the watermark passed its end.
    pub fn closed(&self, watermark: i64) -> bool {
        watermark >= self.end
    }

    /// The month's `bill_at_risk` episode with the watermark at `watermark`: judged once the
    /// watermark is within `close_hours` of the month's end, when hours from the first reading
    /// to the end have no readings; open until the month closes.
    pub fn judge(&self, watermark: i64, close_hours: i64) -> Option<Episode> {
        if watermark < self.end - close_hours {
            return None;
        }
        let missing = self.end - self.first - self.hours;
        (missing > 0).then_some(Episode {
            kind: AlertKind::BillAtRisk,
            first_hour: self.first,
            last_hour: self.end - 1,
            open: !self.closed(watermark),
            hours: missing,
            usage_ml: self.usage_ml,
        })
    }
}

/// What a meter's silence needs between batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hearing {
    /// The ingestion hour of the latest folder that held a record of the meter.
    pub last_heard: i64,
    /// The quiet folders since: taken after it, without a record of the meter, and followed by
    /// a later folder taken (the latest folder taken is not judged yet: the rest of its files
    /// may come in the next batch).
    pub quiet: i64,
    /// The first and the last of them, when there are any.
    pub quiet_span: Option<(i64, i64)>,
}

impl Hearing {
    fn heard_in(folder: i64) -> Self {
        Self {
            last_heard: folder,
            quiet: 0,
            quiet_span: None,
        }
    }

    /// The silence its quiet folders make, if at least `min_hours` of them.
    fn silence(&self, min_hours: i64, open: bool) -> Option<Episode> {
        let (first, last) = self.quiet_span?;
        (self.quiet >= min_hours).then(|| silence(first, last, self.quiet, open))
    }
}

/// Folds a batch into one meter's silence: `folders` are the ingestion hours the batch takes
/// that no earlier batch took (ascending), `heard` the folders holding a record of the meter
/// (ascending; the latest folder taken before the batch, `before`, among them when the batch
/// takes more of its files), and `before` the latest ingestion hour taken before the batch.
/// Returns what is known after the batch and the episodes of at least `min_hours` quiet
/// folders that the batch closed or leaves open (at most one open, last).
///
/// A folder is judged once a later folder is taken, so that the files of one ingestion hour
/// split over batches count as they would in one. Folders count in the order the runs take
/// them: a record in a folder older than `before` (a file added to it later) counts as heard in
/// `before`, and a folder that appears after a later one was taken is not counted.
pub fn listen(
    hearing: Option<Hearing>,
    folders: &[i64],
    heard: &[i64],
    before: Option<i64>,
    min_hours: i64,
) -> (Option<Hearing>, Vec<Episode>) {
    let mut hearing = hearing;
    let mut out = Vec::new();
    let close = |h: Option<Hearing>, out: &mut Vec<Episode>| {
        out.extend(h.and_then(|h| h.silence(min_hours, false)));
    };
    let is_heard = |f: i64| heard.binary_search(&f).is_ok();
    if let Some(b) = before
        && heard.first().is_some_and(|&f| f <= b)
    {
        if hearing.is_some_and(|h| h.last_heard < b) {
            close(hearing, &mut out);
        }
        hearing = Some(Hearing::heard_in(b));
    }
    let mut previous = before;
    for &folder in folders {
        // The folder before this one is judged now.
        if let (Some(h), Some(p)) = (&mut hearing, previous)
            && h.last_heard < p
        {
            h.quiet += 1;
            h.quiet_span = Some(h.quiet_span.map_or((p, p), |(first, _)| (first, p)));
        }
        if is_heard(folder) {
            close(hearing, &mut out);
            hearing = Some(Hearing::heard_in(folder));
        }
        previous = Some(folder);
    }
    out.extend(hearing.and_then(|h| h.silence(min_hours, true)));
    (hearing, out)
}

fn silence(first_hour: i64, last_hour: i64, hours: i64, open: bool) -> Episode {
    Episode {
        kind: AlertKind::Silent,
        first_hour,
        last_hour,
        open,
        hours,
        usage_ml: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn run(first: i64, last: i64, usage_ml: i64) -> FlowRun {
        FlowRun {
            first,
            last,
            hours: last - first + 1,
            usage_ml,
        }
    }

    fn flow(first_hour: i64, last_hour: i64, open: bool, hours: i64, usage_ml: i64) -> Episode {
        Episode {
            kind: AlertKind::ContinuousFlow,
            first_hour,
            last_hour,
            open,
            hours,
            usage_ml,
        }
    }

    /// A meter whose hours 0..n each used `per_hour` ml.
    fn flowing(hours: std::ops::Range<i64>, per_hour: i64) -> FlowHistory {
        let mut h = FlowHistory::default();
        for hour in hours {
            h.add(hour, per_hour);
        }
        h
    }

    #[test]
    fn a_day_of_flow_opens_an_episode_and_a_dry_hour_closes_it() {
        let mut h = flowing(0..23, 10);
        assert_eq!(h.episodes(24), vec![], "23 hours are not enough");
        h.add(23, 10);
        assert_eq!(h.episodes(24), vec![flow(0, 23, true, 24, 240)]);
        // Readings of hour 24 that sum to 0: a dry hour ends the episode.
        h.add(24, 0);
        h.add(24, 0);
        assert_eq!(h.episodes(24), vec![flow(0, 23, false, 24, 240)]);
        assert_eq!(h.flow_runs(), &[run(0, 23, 240)]);
        assert_eq!(h.dry_runs(), &[(24, 24)]);
        // More flow after the dry hour starts a new stretch.
        h.add(25, 5);
        assert_eq!(h.episodes(24), vec![flow(0, 23, false, 24, 240)]);
    }

    #[test]
    fn a_late_reading_in_a_dry_hour_joins_two_episodes_into_one() {
        let mut h = flowing(0..30, 10);
        h.add(30, 0);
        for hour in 31..60 {
            h.add(hour, 10);
        }
        assert_eq!(
            h.episodes(24),
            vec![flow(0, 29, false, 30, 300), flow(31, 59, true, 29, 290)]
        );
        // A replayed reading of hour 30 used 7 ml: the hour was flow after all.
        h.add(30, 7);
        assert_eq!(h.episodes(24), vec![flow(0, 59, true, 60, 597)]);
        assert_eq!(h.flow_runs(), &[run(0, 59, 597)]);
        assert!(h.dry_runs().is_empty());
    }

    #[test]
    fn unknown_hours_neither_count_nor_end_an_episode_and_a_late_dry_one_splits_it() {
        let mut h = flowing(0..12, 10);
        for hour in 20..32 {
            h.add(hour, 10);
        }
        // Hours 12..20 have no readings (an outage): 24 flow hours across them.
        assert_eq!(h.episodes(24), vec![flow(0, 31, true, 24, 240)]);
        // The outage is replayed: hours 12..15 used water, hour 16 none.
        for hour in 12..16 {
            h.add(hour, 1);
        }
        h.add(16, 0);
        assert_eq!(h.episodes(16), vec![flow(0, 15, false, 16, 124)]);
        assert_eq!(h.episodes(24), vec![]);
        assert_eq!(h.flow_runs(), &[run(0, 15, 124), run(20, 31, 120)]);
        assert_eq!(h.dry_runs(), &[(16, 16)]);
        // Order does not matter: the same hours added backwards give the same history.
        let mut backwards = FlowHistory::default();
        for hour in (20..32).rev() {
            backwards.add(hour, 10);
        }
        backwards.add(16, 0);
        for hour in (0..16).rev() {
            backwards.add(hour, if hour >= 12 { 1 } else { 10 });
        }
        assert_eq!(backwards, h);
    }

    #[test]
    fn a_dry_hour_turned_into_flow_splits_its_dry_run() {
        let mut h = FlowHistory::default();
        for hour in 0..5 {
            h.add(hour, 0);
        }
        h.add(2, 3);
        assert_eq!(h.dry_runs(), &[(0, 1), (3, 4)]);
        assert_eq!(h.flow_runs(), &[run(2, 2, 3)]);
        h.add(0, 1);
        h.add(4, 1);
        assert_eq!(h.dry_runs(), &[(1, 1), (3, 3)]);
        assert_eq!(h.flow_runs(), &[run(0, 0, 1), run(2, 2, 3), run(4, 4, 1)]);
        assert_eq!(
            FlowHistory::from_runs(h.flow_runs().to_vec(), h.dry_runs().to_vec()),
            Ok(h)
        );
    }

    #[test]
    fn forgetting_keeps_the_last_dry_hour_before_the_watermark_and_what_follows() {
        // Flow 0..30, dry 30..32, flow 32..40, dry 40, flow 41..100.
        let mut h = flowing(0..30, 10);
        h.add(30, 0);
        h.add(31, 0);
        for hour in (32..40).chain(41..100) {
            h.add(hour, 10);
        }
        h.add(40, 0);
        let before = h.episodes(24);
        assert_eq!(
            before,
            vec![flow(0, 29, false, 30, 300), flow(41, 99, true, 59, 590)]
        );
        assert_eq!(h.floor(), None);
        // Watermark 35: the dry hour 31 is the last before it; hours before it are final.
        h.forget_before(35);
        assert_eq!(h.floor(), Some(31));
        assert_eq!(h.dry_runs(), &[(31, 31), (40, 40)]);
        assert_eq!(h.flow_runs(), &[run(32, 39, 80), run(41, 99, 590)]);
        assert_eq!(h.episodes(24), vec![flow(41, 99, true, 59, 590)]);
        // A dry run the watermark cuts keeps the hour before the watermark.
        let mut g = FlowHistory::default();
        for hour in 0..10 {
            g.add(hour, 0);
        }
        g.add(10, 4);
        g.forget_before(5);
        assert_eq!(g.dry_runs(), &[(4, 9)]);
        assert_eq!(g.floor(), Some(4));
        // No dry hour before the watermark: nothing is forgotten (a leak running for months).
        let mut leak = flowing(0..1000, 1);
        leak.forget_before(900);
        assert_eq!(leak.flow_runs(), &[run(0, 999, 1000)]);
        assert_eq!(leak.episodes(24), vec![flow(0, 999, true, 1000, 1000)]);
    }

    #[test]
    fn a_leak_with_gaps_keeps_one_run_before_the_watermark() {
        // Flow in every hour of 0..1000 but every 50th (no readings: outages), never dry.
        let mut h = FlowHistory::default();
        for hour in (0..1000).filter(|h| h % 50 != 0) {
            h.add(hour, 2);
        }
        let whole = h.episodes(24);
        assert_eq!(whole, vec![flow(1, 999, true, 980, 1960)]);
        assert_eq!(h.flow_runs().len(), 20);
        h.forget_before(900);
        // The 18 runs before the watermark are one; the runs after it stay as they are.
        assert_eq!(
            h.flow_runs(),
            &[
                FlowRun {
                    first: 1,
                    last: 899,
                    hours: 882,
                    usage_ml: 1764
                },
                run(901, 949, 98),
                run(951, 999, 98)
            ]
        );
        assert_eq!(h.episodes(24), whole);
        // The gap at hour 900 still fills, and joins the merged run.
        h.add(900, 5);
        assert_eq!(h.episodes(24), vec![flow(1, 999, true, 981, 1965)]);
        assert_eq!(
            FlowHistory::from_runs(h.flow_runs().to_vec(), vec![]).map(|g| g.episodes(24)),
            Ok(h.episodes(24))
        );
    }

    #[test]
    fn stored_runs_that_contradict_each_other_are_refused() {
        assert!(FlowHistory::from_runs(vec![run(0, 5, 1), run(6, 7, 1)], vec![]).is_err());
        assert!(FlowHistory::from_runs(vec![run(0, 5, 1)], vec![(3, 3)]).is_err());
        assert!(FlowHistory::from_runs(vec![run(0, 5, 0)], vec![]).is_err());
        assert!(FlowHistory::from_runs(vec![], vec![(0, 1), (2, 3)]).is_err());
        assert!(FlowHistory::from_runs(vec![run(4, 5, 1)], vec![(0, 1), (7, 7)]).is_ok());
        // A dry run meeting a flow run at either end, or around it, or between two.
        let two = || vec![run(0, 1, 1), run(5, 6, 1)];
        for dry in [(1, 2), (4, 5), (6, 9), (-3, 0), (3, 8)] {
            assert!(FlowHistory::from_runs(two(), vec![dry]).is_err(), "{dry:?}");
        }
        for dry in [(2, 4), (3, 3), (7, 9), (-3, -1)] {
            assert!(FlowHistory::from_runs(two(), vec![dry]).is_ok(), "{dry:?}");
        }
        assert!(FlowHistory::from_runs(two(), vec![(-5, -4), (2, 2), (8, 8)]).is_ok());
        assert!(FlowHistory::from_runs(two(), vec![(-5, -4), (2, 2), (6, 8)]).is_err());
        // Runs given in any order are taken sorted.
        let sorted = FlowHistory::from_runs(two(), vec![(2, 2), (8, 8)]);
        let reversed =
            FlowHistory::from_runs(two().into_iter().rev().collect(), vec![(8, 8), (2, 2)]);
        assert_eq!(sorted, reversed);
        assert!(sorted.is_ok());
    }

    #[test]
    fn a_meter_quiet_for_thirty_folders_is_silent_once_the_twenty_fourth_is_judged() {
        let folders: Vec<i64> = (100..140).collect();
        // Heard in folder 100, then nothing until 131; one batch per folder.
        let (mut hearing, episodes) = listen(None, &folders[..1], &[100], None, 24);
        assert!(episodes.is_empty());
        let mut seen = BTreeMap::new();
        for (i, &f) in folders.iter().enumerate().skip(1) {
            let heard: &[i64] = if f == 131 { &[131] } else { &[] };
            let (h, e) = listen(hearing, &[f], heard, Some(folders[i - 1]), 24);
            hearing = h;
            seen.insert(f, e);
        }
        // Folder 124 is the 24th quiet one, judged once folder 125 is taken.
        assert_eq!(seen[&124], vec![]);
        assert_eq!(seen[&125], vec![silence(101, 124, 24, true)]);
        assert_eq!(seen[&131], vec![silence(101, 130, 30, false)]);
        assert_eq!(seen[&139], vec![]);
        // One batch over all folders gives the same episode and the same state.
        let (one, episodes) = listen(None, &folders, &[100, 131], None, 24);
        assert_eq!(episodes, vec![silence(101, 130, 30, false)]);
        assert_eq!(one, hearing);
        assert_eq!(
            one,
            Some(Hearing {
                last_heard: 131,
                quiet: 7,
                quiet_span: Some((132, 138)),
            })
        );
    }

    #[test]
    fn the_files_of_one_folder_over_two_batches_count_as_one_folder() {
        // Quiet in folders 1..=30; its records come in the second file of folder 31, which
        // the next batch takes with folder 32.
        let (h, _) = listen(None, &[0], &[0], None, 24);
        let (h, open) = listen(h, &(1..=31).collect::<Vec<_>>(), &[], Some(0), 24);
        assert_eq!(open, vec![silence(1, 30, 30, true)]);
        let (h, closed) = listen(h, &[32], &[31, 32], Some(31), 24);
        assert_eq!(closed, vec![silence(1, 30, 30, false)]);
        // In one batch: the same.
        let (one, all) = listen(None, &(0..=32).collect::<Vec<_>>(), &[0, 31, 32], None, 24);
        assert_eq!(all, closed);
        assert_eq!(one, h);
    }

    #[test]
    fn a_month_with_hours_without_readings_is_at_risk_near_its_close() {
        // A month of hours 0..720; the meter's first reading is in hour 100, and 600 of the
        // 620 hours from there have readings.
        let mut m = MonthTally::new(720, 100);
        for hour in 100..700 {
            m.add(hour, 5, true);
        }
        m.add(100, 1, false);
        assert_eq!((m.first, m.hours, m.usage_ml), (100, 600, 3001));
        assert_eq!(
            m.judge(671, 48),
            None,
            "more than 48 hours before the close"
        );
        let risk = Episode {
            kind: AlertKind::BillAtRisk,
            first_hour: 100,
            last_hour: 719,
            open: true,
            hours: 20,
            usage_ml: 3001,
        };
        assert_eq!(m.judge(672, 48), Some(risk));
        assert_eq!(
            m.judge(720, 48),
            Some(Episode {
                open: false,
                ..risk
            })
        );
        assert!(m.closed(720) && !m.closed(719));
        // A late reading of hour 90 moves the first reading back: hours 91..100 are at risk too.
        m.add(90, 2, true);
        assert_eq!(
            m.judge(700, 48).map(|e| (e.first_hour, e.hours)),
            Some((90, 29))
        );
        // Every hour from the first on has readings: no risk.
        let mut full = MonthTally::new(24, 0);
        for hour in 0..24 {
            full.add(hour, 1, true);
        }
        assert_eq!(full.judge(24, 48), None);
    }

    #[test]
    fn a_record_in_a_folder_older_than_the_latest_counts_in_the_latest() {
        // Quiet in folders 1..=40 (judged up to 39); a file added to folder 10 holds a record.
        let (h, _) = listen(None, &[0], &[0], None, 24);
        let (h, open) = listen(h, &(1..=40).collect::<Vec<_>>(), &[], Some(0), 24);
        assert_eq!(open, vec![silence(1, 39, 39, true)]);
        let (h, closed) = listen(h, &[41], &[10], Some(40), 24);
        assert_eq!(closed, vec![silence(1, 39, 39, false)]);
        assert_eq!(h.map(|h| h.last_heard), Some(40));
        // A meter first heard in such a file is heard in the latest folder.
        let (new, none) = listen(None, &[41, 42], &[10], Some(40), 24);
        assert_eq!(
            (new.map(|h| (h.last_heard, h.quiet)), none),
            (Some((40, 1)), vec![])
        );
    }

    #[test]
    fn silence_counts_folders_taken_not_clock_hours() {
        // The log has no folders for hours 10..50 (the ingestion server was down): a meter
        // heard in folder 9 and 50 was never quiet for a folder.
        let (_, episodes) = listen(None, &[8, 9, 50, 51], &[9, 50], None, 24);
        assert!(episodes.is_empty());
        // A meter never heard is not silent.
        let (none, episodes) = listen(None, &(0..48).collect::<Vec<_>>(), &[], None, 24);
        assert_eq!((none, episodes), (None, vec![]));
    }
}
