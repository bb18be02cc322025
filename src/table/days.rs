//! Day tables: the final days of an hour-partitioned customer table (`hourly_usage`,
//! `cumulative_usage`), copied once as one file per UTC day, ordered by customer and hour, so
//! that one customer's month reads about 30 day files and the last week's hour files instead of
//! every hour file of the month (720, with side files about twice as many).
//!
//! Each day file carries, in its Delta tags, its day and the digest of the source table's files
//! it copies ([`Covers`]). A read by customer ([`Table::with_days`]) takes a day from the day
//! table only while the source's files of that day are still exactly those: after a rebuild, a
//! restored backup or any rewrite of an hour, the day is read from its hour files again, and the
//! next run's [`Table::write_days`] copies it anew. A day table is never a source of truth: it
//! may lag, never disagree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use polars::prelude::*;

use super::write::{Role, Written};
use super::{Table, block_on};
use crate::error::{Error, Result};
use crate::hours::{format_hour, parse_hour};
use crate::table::col;

/// The Delta tag naming the UTC day (its first hour, `YYYY-MM-DDTHH`) a day file holds.
const DAY_TAG: &str = "aquabill.day";
/// The Delta tag holding the digest of the source files a day file copies.
const SOURCE_TAG: &str = "aquabill.source";
/// Hours in a day file.
const DAY_HOURS: i64 = 24;
/// Days before the watermark kept as day files: a billing month's final days, whichever day
/// of the month it is (the views read the latest month; older days are read by hour).
pub const DAYS_KEPT: i64 = 35;
/// Days a run copies to a day table at most, the latest first: a day costs a read of its 24
/// hours, a sort and a write (at 100,000 meters about 0.4 s a table), and after a rebuild or
/// on the first run of this version a month of days is missing; later runs copy the rest.
const DAYS_PER_RUN: usize = 4;

/// What a day file holds: its day (first hour index) and the digest of the source's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Covers {
    day: i64,
    source: String,
}

impl Covers {
    /// The day and source recorded in a file's tags, if both are there.
    pub(super) fn of_tags(tags: Option<&HashMap<String, Option<String>>>) -> Option<Self> {
        let tag = |key: &str| tags?.get(key)?.clone();
        Some(Self {
            day: parse_hour(&tag(DAY_TAG)?)?,
            source: tag(SOURCE_TAG)?,
        })
    }
}

/// The first hour of the UTC day holding `hour`.
fn day_of(hour: i64) -> i64 {
    hour - hour.rem_euclid(DAY_HOURS)
}

/// What days a customer read may take from the day table: those of `hours`' days whose day
/// file copies the source's current files, with the hours of `hours` they cover.
struct FromDays {
    paths: BTreeSet<String>,
    hours: BTreeSet<i64>,
}

impl Table {
    /// This table with `days` (its day table, if it exists) attached: reads by customer
    /// ([`Table::read_hours_of`], queries filtering on the customer) take the final days that
    /// are up to date from it.
    pub fn with_days(mut self, days: Option<Table>) -> Self {
        self.days = days.map(Box::new);
        self
    }

    /// The digest of this table's files in the hours of the day starting at `day` (`None` if
    /// it has none): the table name and the sorted paths, which Delta never reuses.
    fn day_source(&self, day: i64) -> Option<String> {
        let mut paths: Vec<&str> = self
            .files
            .iter()
            .filter(|f| f.hour.is_some_and(|h| day_of(h) == day))
            .map(|f| f.path.as_str())
            .collect();
        if paths.is_empty() {
            return None;
        }
        paths.sort_unstable();
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.spec.name.as_bytes());
        for path in paths {
            hasher.update(b"\n");
            hasher.update(path.as_bytes());
        }
        Some(hasher.finalize().to_hex().to_string())
    }

    /// The day files that may serve `hours` now.
    fn up_to_date_days(&self, hours: &BTreeSet<i64>) -> Option<FromDays> {
        let days = self.days.as_deref()?;
        let wanted: BTreeSet<i64> = hours.iter().map(|&h| day_of(h)).collect();
        let mut from = FromDays {
            paths: BTreeSet::new(),
            hours: BTreeSet::new(),
        };
        let mut taken = BTreeSet::new();
        for file in &days.files {
            let Some(covers) = &file.covers else {
                continue;
            };
            if !wanted.contains(&covers.day) || taken.contains(&covers.day) {
                continue;
            }
            if self.day_source(covers.day).as_deref() == Some(covers.source.as_str()) {
                taken.insert(covers.day);
                from.paths.insert(file.path.clone());
            }
        }
        from.hours = hours
            .iter()
            .copied()
            .filter(|&h| taken.contains(&day_of(h)))
            .collect();
        (!from.paths.is_empty()).then_some(from)
    }

    /// The rows of those of `hours` the day table holds up to date whose text `column` (the
    /// one the table is sorted by) holds one of `values`, and those hours; `None` when the day
    /// table holds none of them (or there is none, or `column` is another).
    pub(super) async fn read_through_days(
        &self,
        hours: &BTreeSet<i64>,
        column: &str,
        values: &BTreeSet<String>,
    ) -> Result<Option<(BTreeSet<i64>, DataFrame)>> {
        if self.spec.sorted_by != Some(column) {
            return Ok(None);
        }
        let (Some(days), Some(from)) = (self.days.as_deref(), self.up_to_date_days(hours)) else {
            return Ok(None);
        };
        let rows = days
            .read_files_matching(&from.paths, column, values)
            .await?;
        let hour = rows
            .column(col::USAGE_HOUR)
            .and_then(|c| c.i64().cloned())
            .map_err(Error::polars("reading a day table"))?;
        let keep: BooleanChunked = hour
            .into_no_null_iter()
            .map(|h| from.hours.contains(&h))
            .collect();
        let rows = rows
            .filter(&keep)
            .map_err(Error::polars("reading a day table"))?;
        Ok(Some((from.hours, rows)))
    }

    /// The days a day table of this table holds as of `watermark`, with the digest of each
    /// one's files: the [`DAYS_KEPT`] before the watermark's day that have hours here.
    fn final_days(&self, watermark: i64) -> BTreeMap<i64, String> {
        let last = day_of(watermark);
        let first = last - DAYS_KEPT * DAY_HOURS;
        self.partitions()
            .range(first..last)
            .map(|&h| day_of(h))
            .collect::<BTreeSet<i64>>()
            .into_iter()
            .filter_map(|day| Some((day, self.day_source(day)?)))
            .collect()
    }

    /// Whether a day table of this table holds any day as of `watermark` (a run creates one
    /// only then).
    pub fn has_final_days(&self, watermark: i64) -> bool {
        !self.final_days(watermark).is_empty()
    }

    /// Brings `days` (this table's day table) up to date as of `watermark`: each UTC day of
    /// the [`DAYS_KEPT`] before the watermark's day (whose hours are all final) whose day file
    /// is missing or copies other files than this table's current ones is copied, the latest
    /// [`DAYS_PER_RUN`] of them; day files of other days and outdated ones are removed. One
    /// commit of batch `batch_id`, none if nothing changes. Returns the days copied.
    pub fn write_days(&self, days: &mut Table, watermark: i64, batch_id: i64) -> Result<usize> {
        let partitions = self.partitions();
        let wanted = self.final_days(watermark);
        let mut current = BTreeSet::new();
        let mut stale = BTreeSet::new();
        for file in &days.files {
            match &file.covers {
                Some(c) if wanted.get(&c.day) == Some(&c.source) && current.insert(c.day) => {}
                _ => {
                    stale.insert(file.path.clone());
                }
            }
        }
        let copy: Vec<(i64, String)> = wanted
            .into_iter()
            .rev()
            .filter(|(day, _)| !current.contains(day))
            .take(DAYS_PER_RUN)
            .collect();
        if copy.is_empty() && stale.is_empty() {
            return Ok(0);
        }
        let mut adds = Vec::with_capacity(copy.len());
        for (day, source) in &copy {
            let started = std::time::Instant::now();
            let hours: BTreeSet<i64> = partitions.range(day..&(day + DAY_HOURS)).copied().collect();
            let rows = block_on(self.read_hours(&hours))??
                .sort(
                    [col::CUSTOMER_ID, col::USAGE_HOUR],
                    SortMultipleOptions::default().with_multithreaded(true),
                )
                .map_err(Error::polars("ordering a day by customer"))?;
            let Written(written) = days.write_frames(|emit| emit(rows, Role::Main))?;
            for mut add in written {
                let tags = add.tags.get_or_insert_with(Default::default);
                tags.insert(DAY_TAG.to_owned(), Some(format_hour(*day)));
                tags.insert(SOURCE_TAG.to_owned(), Some(source.clone()));
                adds.push(add);
            }
            crate::trace::phase(&format!("days/{} copy", days.spec.name), started);
        }
        block_on(days.commit_written(batch_id, Written(adds), &BTreeSet::new(), &stale))??;
        Ok(copy.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Location;
    use crate::table::schema::{CUMULATIVE_USAGE_DAYS, Values};
    use crate::table::{CUMULATIVE_USAGE, Spec};
    use crate::testing::TempDir;

    const CUSTOMERS: usize = 5_000;

    fn open(dir: &Location, spec: &'static Spec) -> Result<Table> {
        block_on(Table::open_pinned(dir, spec, &[]))?
    }

    /// Rows of `hours` for every customer (in a scrambled order), usage `usage(hour)`.
    fn write_hours(table: &mut Table, hours: &BTreeSet<i64>, usage: i64, batch: i64) -> Result<()> {
        let n = CUSTOMERS;
        // 3,001 is prime to 5,000: `i * 3001 % 5000` visits every id once.
        let ids: Vec<String> = (0..n).map(|i| format!("C{:05}", i * 3001 % n)).collect();
        let written = table.write_frames(|emit| {
            for &hour in hours {
                let frame = CUMULATIVE_USAGE.frame(vec![
                    Values::Str(ids.iter().map(|c| c.as_str().into()).collect()),
                    Values::Long(vec![hour; n]),
                    Values::Str(vec!["2026-03".into(); n]),
                    Values::Long(vec![usage; n]),
                    Values::Long(vec![hour; n]),
                    Values::Bool(vec![false; n]),
                ])?;
                emit(frame, Role::Main)?;
            }
            Ok(())
        })?;
        block_on(table.commit_written(batch, written, hours, &BTreeSet::new()))??;
        Ok(())
    }

    /// What a read found: customer `C00042`'s (hour, usage), the row groups the source and
    /// the day table decoded.
    type Found = (Vec<(i64, i64)>, usize, usize);

    /// Customer `C00042`'s rows of `hours`, read with the day table attached.
    fn read(source: &Location, days: &Location, hours: &BTreeSet<i64>) -> Result<Found> {
        let days = block_on(Table::open_existing(days, &CUMULATIVE_USAGE_DAYS, &[]))??;
        let table = open(source, &CUMULATIVE_USAGE)?.with_days(days);
        let wanted = BTreeSet::from(["C00042".to_owned()]);
        let rows = block_on(table.read_hours_of(hours, col::CUSTOMER_ID, &wanted))??;
        let column = |name: &str| {
            rows.column(name)
                .and_then(|c| c.as_materialized_series().cast(&DataType::String))
                .map(|s| s.str().cloned())
                .and_then(|s| s)
                .map_err(Error::polars("test"))
        };
        let (ids, hour, usage) = (
            column(col::CUSTOMER_ID)?,
            rows.column(col::USAGE_HOUR)
                .and_then(|c| c.i64().cloned())
                .map_err(Error::polars("test"))?,
            rows.column(col::USAGE_ML)
                .and_then(|c| c.i64().cloned())
                .map_err(Error::polars("test"))?,
        );
        let mut found: Vec<(i64, i64)> = ids
            .iter()
            .zip(hour.iter().zip(usage.iter()))
            .filter(|(id, _)| *id == Some("C00042"))
            .filter_map(|(_, (h, u))| Some((h?, u?)))
            .collect();
        found.sort_unstable();
        let day_groups = table.days.as_deref().map_or(0, Table::row_groups_read);
        Ok((found, table.row_groups_read(), day_groups))
    }

    /// A final day is read from its day file while it copies the hour files; once an hour of
    /// it is rewritten, from the hour files, until the day is copied again; days out of reach
    /// are removed.
    #[test]
    fn a_day_is_read_from_its_day_file_only_while_it_copies_the_hours() -> Result<()> {
        let temp = TempDir::new("day-tables");
        let source = Location::Local(temp.path().join("cumulative_usage"));
        let days_dir = Location::Local(temp.path().join("cumulative_usage_days"));
        let first = parse_hour("2026-03-01T00").ok_or(Error::Hour { hour: 0 })?;
        // Two whole days and three hours of a third.
        let hours: BTreeSet<i64> = (first..first + 51).collect();
        let mut table = open(&source, &CUMULATIVE_USAGE)?;
        write_hours(&mut table, &hours, 7, 0)?;
        let mut days = open(&days_dir, &CUMULATIVE_USAGE_DAYS)?;
        let expected = |usage_of: &dyn Fn(i64) -> i64| -> Vec<(i64, i64)> {
            hours.iter().map(|&h| (h, usage_of(h))).collect()
        };

        // Nothing is read from a day table before a day is final.
        assert_eq!(table.write_days(&mut days, first + 23, 1)?, 0);
        let (rows, groups, day_groups) = read(&source, &days_dir, &hours)?;
        assert_eq!(rows, expected(&|_| 7));
        assert_eq!((groups, day_groups), (51, 0));

        // The watermark in the third day: the first two are copied, once.
        let watermark = first + 49;
        assert_eq!(table.write_days(&mut days, watermark, 2)?, 2);
        assert_eq!(
            table.write_days(&mut days, watermark, 3)?,
            0,
            "nothing to copy again"
        );
        let (rows, groups, day_groups) = read(&source, &days_dir, &hours)?;
        assert_eq!(rows, expected(&|_| 7));
        assert_eq!(groups, 3, "the third day's hours from their files");
        assert!(
            (2..=4).contains(&day_groups),
            "a row group or two of each day: {day_groups}"
        );
        // Hours of a day file are read alone, as any hours are.
        let some: BTreeSet<i64> = (first + 2..first + 4).collect();
        let (rows, groups, _) = read(&source, &days_dir, &some)?;
        assert_eq!(rows, vec![(first + 2, 7), (first + 3, 7)]);
        assert_eq!(groups, 0);

        // An hour of the first day rewritten (a rebuild, a restored backup): that day is read
        // from the hour files again; the second still from its day file.
        let rewritten = BTreeSet::from([first + 5]);
        write_hours(&mut table, &rewritten, 1_000, 4)?;
        let now = |h: i64| if h == first + 5 { 1_000 } else { 7 };
        let (rows, groups, day_groups) = read(&source, &days_dir, &hours)?;
        assert_eq!(rows, expected(&now));
        assert_eq!(groups, 24 + 3);
        assert!((1..=2).contains(&day_groups), "{day_groups}");

        // The next copy replaces that day's file alone.
        assert_eq!(table.write_days(&mut days, watermark, 5)?, 1);
        assert_eq!(days.version_and_files().1, 2);
        let (rows, groups, _) = read(&source, &days_dir, &hours)?;
        assert_eq!(rows, expected(&now));
        assert_eq!(groups, 3);

        // Days out of reach of the watermark leave the day table.
        assert_eq!(table.write_days(&mut days, first + 24 * 60, 6)?, 0);
        assert_eq!(days.version_and_files().1, 0);
        let (rows, groups, day_groups) = read(&source, &days_dir, &hours)?;
        assert_eq!(rows, expected(&now));
        assert_eq!((groups, day_groups), (51, 0));
        Ok(())
    }
}
