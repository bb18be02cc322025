//! What the dedup state knows of each meter, small enough to read whole on every run: for each
//! meter and customer it reported for, the hours within the watermark in which it has accepted
//! readings (a bitmap) and its latest reading.
//!
//! Three decisions use it, each exact:
//! - dedup reads a meter's stored readings of an hour only if [`MeterIndex::may_hold`] says a
//!   stored copy can exist: a meter that was silent in that hour (an outage being replayed), or
//!   a reading later than the meter's latest, needs no read at all;
//! - a meter counts once per customer and hour in `hourly_usage` (`meter_count`):
//!   [`MeterIndex::had`] says whether an earlier run already counted it;
//! - a meter that has gone quiet ([`MeterIndex::quiet_customers`]) marks its customer as one
//!   whose rows late data may still change, which the table layout keeps apart.

use std::collections::BTreeSet;

use polars::prelude::DataFrame;

use crate::error::{Error, Result};
use crate::hashing::{FastMap, FastSet};
use crate::hours::HOUR_MICROS;
use crate::table::{DEDUP_METERS, Values, col};

/// Bitmap words per row: 4 × 64 hours cover the watermark's 168 hours and the hour after the
/// latest ingestion hour (clock skew), however the window is aligned.
pub const WORDS: usize = 4;
const BITS: i64 = 64;

/// One meter and a customer it reported for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterRow {
    /// Meter key.
    pub meter: i64,
    /// Customer key.
    pub customer: i64,
    /// `recorded_at` of its latest accepted reading for this customer, µs.
    pub last_seen: i64,
    /// Hours with accepted readings: bit `i` of word `w` is hour `64 * (first_word + w) + i`.
    pub words: [u64; WORDS],
}

/// Every meter the dedup state holds readings of, with the window of hours the bitmaps cover.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeterIndex {
    /// Index of the first bitmap word (hour `64 * first_word`), the same for every row.
    first_word: i64,
    /// Sorted by meter, then customer.
    rows: Vec<MeterRow>,
    /// Meter key to the index of its first row.
    by_meter: FirstRows,
}

/// Where each meter's rows start. Meter keys are given out from 0 in order of first appearance
/// (`run::keys`), so a list indexed by key is the usual form: a lookup is one read, and a
/// batch's records, which name meters in about the order they were first heard, read it and
/// the rows nearly in order (a hash map scatters them). Keys far beyond the rows (a
/// fleet that has seen many more meters than it holds now) use a map, so the list never holds
/// more than a few entries per row.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FirstRows {
    /// Indexed by meter key; [`NO_ROW`] for a meter with no rows.
    Dense(Vec<u32>),
    Sparse(FastMap<i64, usize>),
}

/// A meter with no rows, in [`FirstRows::Dense`].
const NO_ROW: u32 = u32::MAX;

/// The most list entries per row before [`FirstRows`] is a map.
const DENSE_PER_ROW: usize = 4;
/// The entries a list may hold whatever the rows (256 KB).
const DENSE_FLOOR: usize = 1 << 16;

impl Default for FirstRows {
    fn default() -> Self {
        Self::Dense(Vec::new())
    }
}

impl FirstRows {
    /// The first row of each meter of `rows` (sorted by meter).
    fn of(rows: &[MeterRow]) -> Self {
        let max_key = rows.last().map_or(-1, |r| r.meter);
        let dense_len = rows.len().saturating_mul(DENSE_PER_ROW).max(DENSE_FLOOR);
        let len = usize::try_from(max_key.saturating_add(1)).ok();
        let fits = rows.first().is_none_or(|r| r.meter >= 0) && rows.len() < NO_ROW as usize;
        match len.filter(|&len| fits && len <= dense_len) {
            Some(len) => {
                let mut first = vec![NO_ROW; len];
                for (i, row) in rows.iter().enumerate().rev() {
                    // Below `len`, and `i` below `NO_ROW`: checked above.
                    first[row.meter as usize] = i as u32;
                }
                Self::Dense(first)
            }
            None => {
                let mut first = FastMap::with_capacity_and_hasher(rows.len(), Default::default());
                for (i, row) in rows.iter().enumerate().rev() {
                    first.insert(row.meter, i);
                }
                Self::Sparse(first)
            }
        }
    }

    fn get(&self, meter: i64) -> Option<usize> {
        match self {
            Self::Dense(first) => usize::try_from(meter)
                .ok()
                .and_then(|m| first.get(m))
                .filter(|&&i| i != NO_ROW)
                .map(|&i| i as usize),
            Self::Sparse(first) => first.get(&meter).copied(),
        }
    }
}

/// The rows of `meter` in `rows` (sorted by meter), the first of them at `first`.
fn meter_run(rows: &[MeterRow], first: usize, meter: i64) -> &[MeterRow] {
    let len = rows[first..]
        .iter()
        .take_while(|r| r.meter == meter)
        .count();
    &rows[first..first + len]
}

/// Word and bit of `hour` in a window whose bitmaps start at word `first_word`, if it covers it.
fn window_bit(first_word: i64, hour: i64) -> Option<(usize, u64)> {
    let word = hour.div_euclid(BITS) - first_word;
    let word = usize::try_from(word).ok().filter(|&w| w < WORDS)?;
    Some((word, 1u64 << hour.rem_euclid(BITS)))
}

impl MeterIndex {
    /// An index of `rows` (any order) whose bitmaps start at word `first_word`.
    pub fn new(first_word: i64, mut rows: Vec<MeterRow>) -> Self {
        rows.sort_by_key(|r| (r.meter, r.customer));
        let by_meter = FirstRows::of(&rows);
        Self {
            first_word,
            rows,
            by_meter,
        }
    }

    /// The first bitmap word's index.
    #[cfg(test)]
    pub fn first_word(&self) -> i64 {
        self.first_word
    }

    /// The rows, sorted by meter and customer.
    #[cfg(test)]
    pub fn rows(&self) -> &[MeterRow] {
        &self.rows
    }

    fn rows_of(&self, meter: i64) -> &[MeterRow] {
        match self.by_meter.get(meter) {
            Some(first) => meter_run(&self.rows, first, meter),
            None => &[],
        }
    }

    /// Word and bit of `hour`, if the window covers it.
    fn bit(&self, hour: i64) -> Option<(usize, u64)> {
        window_bit(self.first_word, hour)
    }

    /// Whether the stored readings may hold a copy of `meter`'s reading at `recorded_at`: the
    /// meter has readings in that hour and a reading at least as late.
    pub fn may_hold(&self, meter: i64, recorded_at: i64) -> bool {
        let Some((word, bit)) = self.bit(recorded_at.div_euclid(HOUR_MICROS)) else {
            return false;
        };
        self.rows_of(meter)
            .iter()
            .any(|r| r.words[word] & bit != 0 && recorded_at <= r.last_seen)
    }

    /// Whether an earlier run accepted a reading of `meter` for `customer` in `hour`.
    pub fn had(&self, meter: i64, customer: i64, hour: i64) -> bool {
        let Some((word, bit)) = self.bit(hour) else {
            return false;
        };
        self.rows_of(meter)
            .iter()
            .any(|r| r.customer == customer && r.words[word] & bit != 0)
    }

    /// The index after a run: the window moved to start at `watermark` (hours before it
    /// dropped, rows left without any hour dropped), then the accepted readings
    /// `(meter, customer, recorded_at)` added, in order. Readings before the watermark are not
    /// kept, as the stored readings are not. Also says, for each reading, whether it is the
    /// first of its meter for its customer and hour, counting earlier runs' (what makes the
    /// meter count towards `meter_count`).
    pub fn advanced(&self, watermark: i64, accepted: &[(i64, i64, i64)]) -> (Self, Vec<bool>) {
        let first_word = watermark.div_euclid(BITS);
        let shift = first_word - self.first_word;
        // The rows kept in place, their windows shifted; rows new to the index after them.
        let mut rows: Vec<MeterRow> = self
            .rows
            .iter()
            .map(|row| {
                let mut words = [0u64; WORDS];
                for (w, out) in words.iter_mut().enumerate() {
                    let from = w as i64 + shift;
                    if let Some(&word) = usize::try_from(from).ok().and_then(|f| row.words.get(f)) {
                        *out = word;
                    }
                }
                MeterRow {
                    words,
                    ..row.clone()
                }
            })
            .collect();
        let mut added: FastMap<(i64, i64), usize> = FastMap::default();
        let mut first = Vec::with_capacity(accepted.len());
        // Readings of hours the new window does not keep: counted against the old index.
        let mut seen_behind: FastSet<(i64, i64, i64)> = FastSet::default();
        for &(meter, customer, recorded_at) in accepted {
            let hour = recorded_at.div_euclid(HOUR_MICROS);
            let slot = window_bit(first_word, hour).filter(|_| hour >= watermark);
            let Some((word, bit)) = slot else {
                first.push(
                    !self.had(meter, customer, hour) && seen_behind.insert((meter, customer, hour)),
                );
                continue;
            };
            // The kept rows are where they were in `self.rows`: found in `rows` itself, so a
            // reading touches one list of rows, not two.
            let kept = self.by_meter.get(meter).and_then(|first| {
                meter_run(&rows, first, meter)
                    .iter()
                    .position(|r| r.customer == customer)
                    .map(|i| first + i)
            });
            let at = match kept {
                Some(at) => at,
                None => *added.entry((meter, customer)).or_insert_with(|| {
                    rows.push(MeterRow {
                        meter,
                        customer,
                        last_seen: recorded_at,
                        words: [0; WORDS],
                    });
                    rows.len() - 1
                }),
            };
            let row = &mut rows[at];
            // The shifted words still hold what earlier runs knew of this hour.
            first.push(row.words[word] & bit == 0);
            row.words[word] |= bit;
            row.last_seen = row.last_seen.max(recorded_at);
        }
        // Hours before the watermark are gone (the first word may start before it).
        let below = watermark.rem_euclid(BITS);
        let keep_first = if below == 0 {
            !0
        } else {
            !((1u64 << below) - 1)
        };
        rows.retain_mut(|row| {
            row.words[0] &= keep_first;
            row.words.iter().any(|&w| w != 0)
        });
        (Self::new(first_word, rows), first)
    }

    /// Customers with a meter that has not reported since `since` (µs): a meter gone quiet
    /// (an outage, a dead modem) whose readings may still arrive, up to the watermark later.
    pub fn quiet_customers(&self, since: i64) -> BTreeSet<i64> {
        self.rows
            .iter()
            .filter(|r| r.last_seen < since)
            .map(|r| r.customer)
            .collect()
    }
}

impl MeterIndex {
    /// The index stored as `dedup_meters` rows.
    pub fn from_frame(rows: &DataFrame) -> Result<Self> {
        let long = |name: &str| -> Result<Vec<i64>> {
            let c = rows
                .column(name)
                .and_then(|c| c.i64().cloned())
                .map_err(Error::polars("dedup meters"))?;
            if c.null_count() > 0 {
                return Err(Error::table_data(DEDUP_METERS.name, name, "null values"));
            }
            Ok(c.into_no_null_iter().collect())
        };
        let (meters, customers) = (long(col::METER)?, long(col::CUSTOMER)?);
        let (last_seen, first_words) = (long(col::LAST_SEEN)?, long(col::FIRST_WORD)?);
        let words: Vec<Vec<i64>> = col::HOUR_WORDS
            .iter()
            .map(|name| long(name))
            .collect::<Result<_>>()?;
        let first_word = first_words.first().copied().unwrap_or(0);
        if first_words.iter().any(|&w| w != first_word) {
            return Err(Error::table_data(
                DEDUP_METERS.name,
                col::FIRST_WORD,
                "rows with different windows",
            ));
        }
        let rows = (0..meters.len())
            .map(|i| MeterRow {
                meter: meters[i],
                customer: customers[i],
                last_seen: last_seen[i],
                // The bitmaps are stored bit for bit in signed columns.
                words: std::array::from_fn(|w| words[w][i] as u64),
            })
            .collect();
        let index = Self::new(first_word, rows);
        // `advanced` keeps one row per meter and customer, so two are a damaged table (a map
        // of them would keep one silently).
        if index
            .rows
            .windows(2)
            .any(|w| (w[0].meter, w[0].customer) == (w[1].meter, w[1].customer))
        {
            return Err(Error::table_data(
                DEDUP_METERS.name,
                col::METER,
                "a meter and customer in two rows",
            ));
        }
        Ok(index)
    }

    /// The index as `dedup_meters` rows.
    pub fn to_frame(&self) -> Result<DataFrame> {
        let column = |f: &dyn Fn(&MeterRow) -> i64| -> Values<'static> {
            Values::Long(self.rows.iter().map(f).collect())
        };
        let word = |w: usize| column(&move |r: &MeterRow| r.words[w] as i64);
        DEDUP_METERS.frame(vec![
            column(&|r| r.meter),
            column(&|r| r.customer),
            column(&|r| r.last_seen),
            column(&|_| self.first_word),
            word(0),
            word(1),
            word(2),
            word(3),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MICROS;

    #[test]
    fn a_meter_may_hold_readings_only_where_it_reported() {
        // Meter 1 reported for customer 10 in hours 640 and 642 (latest at 642:30).
        let (index, first) = MeterIndex::default().advanced(
            600,
            &[
                (1, 10, 640 * H + 5),
                (1, 10, 642 * H + H / 2),
                (2, 20, 641 * H),
                (1, 10, 642 * H),
            ],
        );
        assert_eq!(
            first,
            [true, true, true, false],
            "meter 1's second reading in 642"
        );
        assert!(index.may_hold(1, 640 * H + 99));
        assert!(!index.may_hold(1, 641 * H + 5), "silent in 641");
        assert!(index.may_hold(1, 642 * H));
        assert!(
            !index.may_hold(1, 642 * H + H / 2 + 1),
            "later than its latest"
        );
        assert!(!index.may_hold(3, 640 * H), "unknown meter");
        assert!(index.had(1, 10, 642));
        assert!(!index.had(1, 11, 642), "another customer");
        assert!(!index.had(1, 10, 641));
        assert_eq!(index.quiet_customers(642 * H), BTreeSet::from([20]));
    }

    #[test]
    fn the_window_moves_with_the_watermark() {
        let (index, _) = MeterIndex::default().advanced(
            0,
            &[
                (1, 10, 5 * H),
                (1, 10, 70 * H),
                (2, 20, 10 * H),
                (3, 30, 200 * H),
            ],
        );
        assert_eq!(index.first_word(), 0);
        // The watermark passes hour 5 and 10: meter 2 has nothing left and goes.
        // Meter 1 read in hour 70 before; meter 4's reading is behind the new watermark but
        // still counts (against what the index knew before).
        let (moved, first) = index.advanced(
            69,
            &[
                (3, 30, 250 * H),
                (4, 40, 68 * H),
                (1, 10, 70 * H),
                (4, 40, 68 * H + 1),
            ],
        );
        assert_eq!(first, [true, true, false, false]);
        assert_eq!(moved.first_word(), 1);
        let meters: Vec<i64> = moved.rows().iter().map(|r| r.meter).collect();
        assert_eq!(meters, [1, 3], "meter 4's reading is behind the watermark");
        assert!(!moved.had(1, 10, 5));
        assert!(moved.had(1, 10, 70));
        assert!(moved.had(3, 30, 200) && moved.had(3, 30, 250));
        assert_eq!(moved.rows()[1].last_seen, 250 * H);
        // The same hour in the next window's last word.
        assert!(moved.advanced(250, &[]).0.had(3, 30, 250));
        assert!(!moved.advanced(251, &[]).0.had(3, 30, 250));
    }

    #[test]
    fn meters_are_found_whether_their_keys_are_close_or_far_apart() {
        let readings = |meters: &[i64]| -> Vec<(i64, i64, i64)> {
            meters.iter().map(|&m| (m, m + 1, 640 * H + 5)).collect()
        };
        let close = [7, 0, 3];
        let far = [7, 5_000_000_000, -2];
        for (meters, dense) in [(&close, true), (&far, false)] {
            let (index, first) = MeterIndex::default().advanced(600, &readings(meters));
            assert_eq!(first, [true; 3]);
            assert_eq!(matches!(index.by_meter, FirstRows::Dense(_)), dense);
            for &m in meters {
                assert!(index.had(m, m + 1, 640), "meter {m}");
                assert!(!index.had(m, m + 2, 640), "meter {m}, another customer");
                assert!(index.may_hold(m, 640 * H + 5), "meter {m}");
            }
            assert!(!index.had(8, 9, 640) && !index.may_hold(8, 640 * H + 5));
            // A second run finds the rows it already has.
            let (again, first) = index.advanced(600, &readings(meters));
            assert_eq!(first, [false; 3]);
            assert_eq!(again.rows(), index.rows());
        }
    }

    #[test]
    fn the_index_round_trips_through_its_table_rows() -> Result<()> {
        // Bit 63 set: the words are stored in signed columns.
        let (index, _) =
            MeterIndex::default().advanced(0, &[(1, 10, 63 * H), (2, 20, 255 * H + 1)]);
        assert_eq!(MeterIndex::from_frame(&index.to_frame()?)?, index);
        // A meter and customer in two rows is refused, not merged.
        let row = |word| MeterRow {
            meter: 1,
            customer: 10,
            last_seen: H,
            words: [word, 0, 0, 0],
        };
        let doubled = MeterIndex::new(0, vec![row(1), row(2)]);
        let refused = MeterIndex::from_frame(&doubled.to_frame()?);
        assert!(
            refused.is_err_and(|e| e.to_string().contains("two rows")),
            "a doubled row"
        );
        Ok(())
    }
}
