//! The simulated fleet: customers, meters, their readings, delivery delays, retries and outages.
//!
//! Every random choice is drawn from a generator seeded by the run's seed and the thing it decides
//! (a meter, a reading, an outage slot), never from a shared stream. So a reading's value and its
//! delivery time do not depend on which ingestion window a call covers: calls over adjacent windows
//! deliver every record exactly once, and the same seed always gives the same records.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cli::Args;

/// Seconds in an outage slot: each meter has at most one outage starting in each slot.
const SLOT_SECS: i64 = 7 * 24 * 3600;
/// Replayed readings reach the server within this many seconds after the meter reconnects.
const REPLAY_SPREAD_SECS: i64 = 300;
/// A retry follows the first copy by at least one minute and less than an hour.
const RETRY_MIN_SECS: i64 = 60;
const RETRY_MAX_SECS: i64 = 3540;

/// How a record came to be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First copy, sent shortly after the reading.
    Live,
    /// First copy, sent from the meter's buffer when it reconnected after an outage.
    Replayed,
    /// Second copy of a reading (a short-term retry), identical payload.
    Retry,
}

/// How a line is damaged, when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The line is cut in the middle of the JSON object.
    TruncatedJson,
    /// `customer_id` is missing.
    MissingField,
    /// `usage_liters` is a string.
    WrongType,
    /// `usage_liters` is negative.
    NegativeUsage,
    /// `recorded_at` has no UTC offset.
    NaiveTimestamp,
}

const DAMAGES: [Damage; 5] = [
    Damage::TruncatedJson,
    Damage::MissingField,
    Damage::WrongType,
    Damage::NegativeUsage,
    Damage::NaiveTimestamp,
];

/// One line of the log.
#[derive(Debug, Clone)]
pub struct Record {
    /// Index of the meter in the fleet.
    pub meter: u32,
    /// End of the reading's interval, Unix seconds.
    pub recorded_at: i64,
    /// When the server received the record, Unix seconds.
    pub ingested_at: i64,
    /// When the first copy of the reading was received (equals `ingested_at` but for retries).
    pub first_ingested_at: i64,
    /// Water used in the interval, milliliters.
    pub usage_ml: u64,
    /// How the record was delivered.
    pub delivery: Delivery,
    /// Set when the line is written malformed.
    pub damage: Option<Damage>,
}

/// An outage of one meter: readings recorded in `[start, end)` are sent at `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outage {
    start: i64,
    end: i64,
}

/// The meters, their customers and the knobs that shape their traffic.
pub struct Fleet {
    seed: u64,
    customer_of: Vec<u32>,
    mean_ml: Vec<u32>,
    phase_secs: Vec<i64>,
    interval_secs: i64,
    delay_mean_secs: f64,
    delay_max_secs: i64,
    duplicate_rate: f64,
    offline_share: f64,
    leak_share: f64,
    max_outage_secs: i64,
    /// No outage begins before this (seconds since the epoch).
    outages_from: i64,
    malformed_rate: f64,
}

/// A leak of one meter: every interval recorded in `[start, end)` uses `ml` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Leak {
    start: i64,
    end: i64,
    ml: u64,
}

/// Purposes of the independent random streams, mixed into their seeds.
#[derive(Clone, Copy)]
enum Stream {
    Customers = 1,
    Meter = 2,
    Reading = 3,
    Outage = 4,
    Damage = 5,
    Idle = 6,
    Leak = 7,
}

impl Fleet {
    /// Builds the fleet described by the arguments.
    pub fn new(args: &Args) -> Self {
        let mut assign = rng(args.seed, Stream::Customers, 0, 0);
        let mut customer_of = Vec::with_capacity(args.meters as usize);
        let mut customer = 0u32;
        while customer_of.len() < args.meters as usize {
            let meters = assign.random_range(1..=args.max_meters_per_customer);
            for _ in 0..meters {
                if customer_of.len() < args.meters as usize {
                    customer_of.push(customer);
                }
            }
            customer += 1;
        }
        let interval_secs = i64::from(args.interval_minutes) * 60;
        let (mean_ml, phase_secs) = (0..args.meters)
            .map(|m| {
                let mut r = rng(args.seed, Stream::Meter, i64::from(m), 0);
                // Households use 100 to 600 liters a day: 300 to 2,000 ml per 5 minutes.
                let mean = r.random_range(300..2000) * args.interval_minutes / 5;
                let phase = i64::from(r.random_range(0..args.interval_minutes)) * 60;
                (mean, phase)
            })
            .unzip();
        Self {
            seed: args.seed,
            customer_of,
            mean_ml,
            phase_secs,
            interval_secs,
            delay_mean_secs: args.delay_mean_minutes * 60.0,
            delay_max_secs: i64::from(args.delay_max_minutes) * 60,
            duplicate_rate: args.duplicate_rate,
            offline_share: args.offline_share,
            leak_share: args.leak_share,
            max_outage_secs: i64::from(args.max_outage_hours) * 3600,
            outages_from: args.outages_from.map_or(i64::MIN, |t| t.timestamp()),
            malformed_rate: args.malformed_rate,
        }
    }

    /// Number of meters.
    pub fn meters(&self) -> u32 {
        self.customer_of.len() as u32
    }

    /// The customer a meter serves.
    pub fn customer_of(&self, meter: u32) -> u32 {
        self.customer_of[meter as usize]
    }

    /// Every record the server receives in `[from, to)` (Unix seconds), in no particular order.
    pub fn records_ingested(&self, from: i64, to: i64, out: &mut Vec<Record>) {
        for meter in 0..self.meters() {
            self.live_records(meter, from, to, out);
            self.replayed_records(meter, from, to, out);
        }
    }

    /// Readings sent live (and their retries) that arrive in `[from, to)`.
    fn live_records(&self, meter: u32, from: i64, to: i64, out: &mut Vec<Record>) {
        let earliest = from - self.delay_max_secs - RETRY_MAX_SECS;
        let mut t = self.first_reading_at_or_after(meter, earliest);
        while t < to {
            if self.covering_outage(meter, t).is_none() {
                let mut r = rng(self.seed, Stream::Reading, i64::from(meter), t);
                let delay = self.live_delay(&mut r);
                self.deliver(meter, t, t + delay, Delivery::Live, &mut r, from, to, out);
            }
            t += self.interval_secs;
        }
    }

    /// Readings buffered during an outage that ends so that they arrive in `[from, to)`.
    fn replayed_records(&self, meter: u32, from: i64, to: i64, out: &mut Vec<Record>) {
        let first_slot = (from - self.max_outage_secs - REPLAY_SPREAD_SECS - RETRY_MAX_SECS)
            .div_euclid(SLOT_SECS)
            - 1;
        for slot in first_slot..=to.div_euclid(SLOT_SECS) {
            let Some(outage) = self.outage(meter, slot) else {
                continue;
            };
            if outage.end + REPLAY_SPREAD_SECS + RETRY_MAX_SECS < from || outage.end >= to {
                continue;
            }
            let mut t = self.first_reading_at_or_after(meter, outage.start);
            while t < outage.end {
                // Outages may overlap; a reading belongs to the first one that covers it.
                if self.covering_outage(meter, t) == Some(outage) {
                    let mut r = rng(self.seed, Stream::Reading, i64::from(meter), t);
                    let sent = outage.end + r.random_range(0..REPLAY_SPREAD_SECS);
                    self.deliver(meter, t, sent, Delivery::Replayed, &mut r, from, to, out);
                }
                t += self.interval_secs;
            }
        }
    }

    /// Emits the first copy of a reading sent at `sent`, and its retry, where they fall in
    /// `[from, to)`.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &self,
        meter: u32,
        recorded_at: i64,
        sent: i64,
        delivery: Delivery,
        r: &mut ChaCha8Rng,
        from: i64,
        to: i64,
        out: &mut Vec<Record>,
    ) {
        let usage_ml = self.usage_ml(meter, recorded_at, r);
        let retry_at = r
            .random_bool(self.duplicate_rate)
            .then(|| sent + r.random_range(RETRY_MIN_SECS..=RETRY_MAX_SECS));
        let copies = [
            (sent, delivery),
            (retry_at.unwrap_or(i64::MIN), Delivery::Retry),
        ];
        for (ingested_at, delivery) in copies {
            if (from..to).contains(&ingested_at) {
                out.push(Record {
                    meter,
                    recorded_at,
                    ingested_at,
                    first_ingested_at: sent,
                    usage_ml,
                    delivery,
                    damage: self.damage(meter, recorded_at, delivery),
                });
            }
        }
    }

    /// The damage done to one copy of a reading, if any.
    fn damage(&self, meter: u32, recorded_at: i64, delivery: Delivery) -> Option<Damage> {
        if self.malformed_rate == 0.0 {
            return None;
        }
        let copy = i64::from(delivery == Delivery::Retry);
        let mut r = rng(
            self.seed,
            Stream::Damage,
            i64::from(meter),
            recorded_at * 2 + copy,
        );
        r.random_bool(self.malformed_rate)
            .then(|| DAMAGES[r.random_range(0..DAMAGES.len())])
    }

    /// Delivery delay of a live reading: exponential, at least one second, capped.
    fn live_delay(&self, r: &mut ChaCha8Rng) -> i64 {
        let u: f64 = r.random_range(f64::EPSILON..1.0);
        let delay = (-u.ln() * self.delay_mean_secs).round() as i64;
        delay.clamp(1, self.delay_max_secs)
    }

    /// Usage of one interval: a daily rhythm around the meter's mean, some intervals idle, and
    /// whole hours idle (most nights have some: a household asleep uses no water), plus the
    /// flow of a leak, if one runs.
    fn usage_ml(&self, meter: u32, recorded_at: i64, r: &mut ChaCha8Rng) -> u64 {
        const RHYTHM: [u32; 24] = [
            20, 10, 10, 10, 20, 60, 160, 200, 150, 100, 90, 100, 120, 100, 90, 90, 110, 150, 180,
            170, 140, 110, 70, 40,
        ];
        let hour = recorded_at.rem_euclid(86_400) / 3600;
        let mean = u64::from(self.mean_ml[meter as usize]) * u64::from(RHYTHM[hour as usize]) / 100;
        // The interval's own draws come first, whatever else decides: the records' other
        // random choices (retries, delays) stay those of the same seed without idle hours.
        let used = if r.random_bool(0.15) {
            0
        } else {
            r.random_range(0..=2 * mean)
        };
        let idle_share = match RHYTHM[hour as usize] {
            0..=20 => 0.8,
            21..=70 => 0.3,
            _ => 0.05,
        };
        let idle = rng(
            self.seed,
            Stream::Idle,
            i64::from(meter),
            recorded_at.div_euclid(3600),
        )
        .random_bool(idle_share);
        let leak = self.leak(meter, recorded_at).map_or(0, |l| l.ml);
        if idle { leak } else { used + leak }
    }

    /// The leak of `meter` that runs at `t`, if any: each week a meter may start one, lasting
    /// less than a week, so only the leaks of `t`'s week and of the week before can run.
    fn leak(&self, meter: u32, t: i64) -> Option<Leak> {
        if self.leak_share == 0.0 {
            return None;
        }
        let week = t.div_euclid(SLOT_SECS);
        [week - 1, week].into_iter().find_map(|w| {
            let mut r = rng(self.seed, Stream::Leak, i64::from(meter), w);
            if !r.random_bool(self.leak_share) {
                return None;
            }
            let start = w * SLOT_SECS + r.random_range(0..SLOT_SECS);
            let end = start + r.random_range(24..=96) * 3600;
            let ml = r.random_range(20..=200) * self.interval_secs as u64 / 300;
            (start..end).contains(&t).then_some(Leak { start, end, ml })
        })
    }

    /// The first reading time of `meter` at or after `t`.
    fn first_reading_at_or_after(&self, meter: u32, t: i64) -> i64 {
        let phase = self.phase_secs[meter as usize];
        let k = (t - phase + self.interval_secs - 1).div_euclid(self.interval_secs);
        k * self.interval_secs + phase
    }

    /// The outage of `meter` that starts in `slot`, if it has one.
    fn outage(&self, meter: u32, slot: i64) -> Option<Outage> {
        let mut r = rng(self.seed, Stream::Outage, i64::from(meter), slot);
        if !r.random_bool(self.offline_share) {
            return None;
        }
        let start = slot * SLOT_SECS + r.random_range(0..SLOT_SECS);
        let end = start + r.random_range(3600..=self.max_outage_secs);
        (start >= self.outages_from).then_some(Outage { start, end })
    }

    /// The outage a reading at `t` falls into; an outage lasts less than a slot, so only the
    /// outages of `t`'s slot and of the slot before can cover it.
    fn covering_outage(&self, meter: u32, t: i64) -> Option<Outage> {
        let slot = t.div_euclid(SLOT_SECS);
        [slot - 1, slot]
            .into_iter()
            .filter_map(|s| self.outage(meter, s))
            .find(|o| (o.start..o.end).contains(&t))
    }
}

/// A random stream for one purpose and one subject, independent of every other stream.
fn rng(seed: u64, stream: Stream, a: i64, b: i64) -> ChaCha8Rng {
    let mut h = splitmix(seed ^ splitmix(stream as u64));
    h = splitmix(h ^ a as u64);
    h = splitmix(h ^ b as u64);
    ChaCha8Rng::seed_from_u64(h)
}

/// SplitMix64 finalizer: spreads close inputs over the whole seed space.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
