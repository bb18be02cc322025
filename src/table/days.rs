//! Day tables: the final days of an hour-partitioned customer table (`hourly_usage`,
//! `cumulative_usage`), copied as one file per UTC day, ordered by customer and hour, so that
//! one customer's month reads its final days from up to 24 day files and only the last week
//! from hour files, instead of every hour file of the month (720, with side files about twice
//! as many).
//!
//! Each day file lists, in its Delta tags, its day and the paths of the source table's files it
//! copies ([`Covers`]). A read by customer ([`Table::with_days`]) takes a day from its day file
//! while every file it copies is still one of the day's files: the day's rows are then the day
//! file's and those of the files added to the day since (the zero rows of a customer new to the
//! month are appended to the month's final hours), which are read from the hour files. Once a
//! copied file is gone (a rebuild, a restored backup, compacted side files, another engine's
//! rewrite), the day is read from its hour files again, and a later run's [`Table::write_days`]
//! copies it anew. A day table is never a source of truth: it may lag, never disagree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use polars::prelude::*;

use super::write::{Role, Written};
use super::{Table, block_on};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hashing::FastMap;
use crate::hours::{format_hour, parse_hour};
use crate::table::{col, long_values};

/// The Delta tag naming the UTC day (its first hour, `YYYY-MM-DDTHH`) a day file holds.
const DAY_TAG: &str = "aquabill.day";
/// The Delta tag listing the source files a day file copies: [`COPIES_FORMAT`], then their
/// paths, one a line.
const COPIES_TAG: &str = "aquabill.copies";
/// The first line of [`COPIES_TAG`]: a day file of another layout is not read, and copied anew.
const COPIES_FORMAT: &str = "day file 1";
/// Hours in a day file.
const DAY_HOURS: i64 = 24;
/// Days before the watermark kept as day files: a billing month's final days, whichever day
/// of the month it is (the views read the latest month; older days are read by hour).
pub const DAYS_KEPT: i64 = 35;
/// Days a run copies to a day table at most, the latest first: a day costs a read of its 24
/// hours, a sort and a write (at 100,000 meters about 0.35 s a table), and after a rebuild or
/// on the first run of this version a month of days is missing; later runs copy the rest.
const DAYS_PER_RUN: usize = 4;

/// What a day file holds: its day (first hour index) and the source's files it copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Covers {
    day: i64,
    copies: BTreeSet<String>,
}

impl Covers {
    /// The day and copied files recorded in a file's tags, if they are there in this layout.
    pub(super) fn of_tags(tags: Option<&HashMap<String, Option<String>>>) -> Option<Self> {
        let tag = |key: &str| tags?.get(key)?.clone();
        let copies = tag(COPIES_TAG)?;
        let mut lines = copies.lines();
        (lines.next() == Some(COPIES_FORMAT)).then_some(())?;
        Some(Self {
            day: parse_hour(&tag(DAY_TAG)?)?,
            copies: lines.map(str::to_owned).collect(),
        })
    }

    /// The tags of a day file of `day` copying `copies`.
    fn tags(day: i64, copies: &BTreeSet<String>) -> [(String, String); 2] {
        let mut listed = String::from(COPIES_FORMAT);
        for path in copies {
            listed.push('\n');
            listed.push_str(path);
        }
        [
            (DAY_TAG.to_owned(), format_hour(day)),
            (COPIES_TAG.to_owned(), listed),
        ]
    }
}

/// The first hour of the UTC day holding `hour`.
fn day_of(hour: i64) -> i64 {
    hour - hour.rem_euclid(DAY_HOURS)
}

/// The hours of the [`DAYS_KEPT`] days before the watermark's day: the final days a day table
/// holds.
fn final_hours(watermark: i64) -> std::ops::Range<i64> {
    let last = day_of(watermark);
    last - DAYS_KEPT * DAY_HOURS..last
}

/// How a day file stands against the source's files of its day now.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    /// It copies exactly the day's files.
    Current,
    /// It copies some of them, and these were added since: still read, with them.
    Behind(BTreeSet<String>),
    /// A file it copies is gone: not read.
    Stale,
}

/// What a read by customer takes from the day table: the day files, the hours they hold, and
/// the files added to those hours since they were copied.
struct FromDays {
    paths: BTreeSet<String>,
    hours: BTreeSet<i64>,
    added: BTreeSet<String>,
}

impl Table {
    /// This table with `days` (its day table, if it exists) attached: reads by customer
    /// ([`Table::read_hours_of`], queries filtering on the customer) take the final days from
    /// it where it can (see the module's documentation).
    pub fn with_days(mut self, days: Option<Table>) -> Self {
        self.days = days.map(Box::new);
        self
    }

    /// This table's files in the hours of the day starting at `day`.
    fn files_of_day(&self, day: i64) -> BTreeSet<String> {
        self.files
            .iter()
            .filter(|f| f.hour.is_some_and(|h| day_of(h) == day))
            .map(|f| f.path.clone())
            .collect()
    }

    /// How a day file copying `covers` stands against this table's files.
    fn standing(&self, covers: &Covers) -> Standing {
        let now = self.files_of_day(covers.day);
        if !covers.copies.is_subset(&now) || covers.copies.is_empty() {
            Standing::Stale
        } else if covers.copies.len() == now.len() {
            Standing::Current
        } else {
            Standing::Behind(now.difference(&covers.copies).cloned().collect())
        }
    }

    /// Of `days`' files (this table's day table), the one that serves each day `wanted` admits
    /// (the first whose copied files are all still the day's), with its standing against this
    /// table's files; and every other file: of other days, of another layout, stale, extra.
    fn serving(
        &self,
        days: &Table,
        wanted: impl Fn(i64) -> bool,
    ) -> (BTreeMap<i64, (String, Standing)>, BTreeSet<String>) {
        let mut serving: BTreeMap<i64, (String, Standing)> = BTreeMap::new();
        let mut others = BTreeSet::new();
        for file in &days.files {
            let standing = match &file.covers {
                Some(covers) if wanted(covers.day) && !serving.contains_key(&covers.day) => {
                    Some((covers.day, self.standing(covers)))
                }
                _ => None,
            };
            match standing {
                Some((day, standing)) if standing != Standing::Stale => {
                    serving.insert(day, (file.path.clone(), standing));
                }
                _ => {
                    others.insert(file.path.clone());
                }
            }
        }
        (serving, others)
    }

    /// The day files that may serve `hours` now.
    fn usable_days(&self, hours: &BTreeSet<i64>) -> Option<FromDays> {
        let days = self.days.as_deref()?;
        let wanted: BTreeSet<i64> = hours.iter().map(|&h| day_of(h)).collect();
        let (serving, _) = self.serving(days, |day| wanted.contains(&day));
        let mut from = FromDays {
            paths: BTreeSet::new(),
            hours: BTreeSet::new(),
            added: BTreeSet::new(),
        };
        for (path, standing) in serving.values() {
            from.paths.insert(path.clone());
            if let Standing::Behind(added) = standing {
                from.added.extend(added.iter().cloned());
            }
        }
        from.hours = hours
            .iter()
            .copied()
            .filter(|&h| serving.contains_key(&day_of(h)))
            .collect();
        (!from.paths.is_empty()).then_some(from)
    }

    /// The rows of those of `hours` the day table can serve whose text `column` (the one the
    /// table is sorted by) holds one of `values` (from the day files and the files added to
    /// their days since), and those hours; `None` when the day table serves none of them (or
    /// there is none, or `column` is another).
    pub(super) async fn read_through_days(
        &self,
        hours: &BTreeSet<i64>,
        column: &str,
        values: &BTreeSet<String>,
    ) -> Result<Option<(BTreeSet<i64>, DataFrame)>> {
        if self.spec.sorted_by != Some(column) {
            return Ok(None);
        }
        let (Some(days), Some(from)) = (self.days.as_deref(), self.usable_days(hours)) else {
            return Ok(None);
        };
        let copied = days
            .read_files_matching(&BTreeSet::new(), &from.paths, column, values)
            .await?;
        let hour = copied
            .column(col::USAGE_HOUR)
            .and_then(|c| c.i64().cloned())
            .map_err(Error::polars("reading a day table"))?;
        let keep: BooleanChunked = hour
            .into_no_null_iter()
            .map(|h| from.hours.contains(&h))
            .collect();
        let mut rows = copied
            .filter(&keep)
            .map_err(Error::polars("reading a day table"))?;
        if !from.added.is_empty() {
            let added = self
                .read_files_matching(&from.hours, &from.added, column, values)
                .await?;
            rows.vstack_mut(&added)
                .map_err(Error::polars("reading a day table"))?;
        }
        Ok(Some((from.hours, rows)))
    }

    /// The days a day table of this table holds as of `watermark`, with each one's files: the
    /// [`DAYS_KEPT`] before the watermark's day that have hours here.
    fn final_days(&self, watermark: i64) -> BTreeMap<i64, BTreeSet<String>> {
        self.partitions()
            .range(final_hours(watermark))
            .map(|&h| day_of(h))
            .collect::<BTreeSet<i64>>()
            .into_iter()
            .map(|day| (day, self.files_of_day(day)))
            .collect()
    }

    /// Whether a day table of this table holds any day as of `watermark` (a run creates one
    /// only then).
    pub fn has_final_days(&self, watermark: i64) -> bool {
        self.partitions()
            .range(final_hours(watermark))
            .next()
            .is_some()
    }

    /// This table's day table under `config`, created once this table has a final day as of
    /// `watermark` (a run creates one only then); `None` before, or for a table without one.
    pub fn day_table(&self, config: &Config, watermark: i64) -> Result<Option<Table>> {
        let Some(spec) = self.spec.days else {
            return Ok(None);
        };
        let dir = spec.dir(config);
        match block_on(Table::open_existing(&dir, spec, &[]))?? {
            Some(days) => Ok(Some(days)),
            None if self.has_final_days(watermark) => {
                Ok(Some(block_on(Table::open_pinned(&dir, spec, &[]))??))
            }
            None => Ok(None),
        }
    }

    /// [`Table::write_days`] again and again until every final day is copied, as the runs of
    /// the next days would, a few a run (benchmarks: a history made before the day tables).
    /// At most [`DAYS_KEPT`] rounds: a day whose files hold no rows gets no day file and would
    /// be tried again each round. Returns the days copied.
    pub fn write_all_days(&self, days: &mut Table, watermark: i64) -> Result<usize> {
        let mut copied = 0;
        for _ in 0..DAYS_KEPT {
            match self.write_days(days, watermark)? {
                0 => break,
                some => copied += some,
            }
        }
        Ok(copied)
    }

    /// Brings `days` (this table's day table) up to date as of `watermark`: of the
    /// [`DAYS_KEPT`] days before the watermark's day (whose hours are all final), those without
    /// a day file that can be read are copied first, then those whose files were added to since
    /// their copy, the latest first, [`DAYS_PER_RUN`] at most; the day files replaced, of other
    /// days, unreadable, or extra are removed. One commit (the day table's own next batch, as
    /// it is derived and checked when read), none if nothing changes. Returns the days copied.
    pub fn write_days(&self, days: &mut Table, watermark: i64) -> Result<usize> {
        let wanted = self.final_days(watermark);
        // The day files kept, each kept day's standing; every other file is removed.
        let (mut kept, mut remove) = self.serving(days, |day| wanted.contains_key(&day));
        let missing = wanted.keys().rev().filter(|day| !kept.contains_key(day));
        let behind = kept
            .iter()
            .rev()
            .filter(|(_, (_, standing))| *standing != Standing::Current);
        let copy: Vec<i64> = missing
            .copied()
            .chain(behind.map(|(&day, _)| day))
            .take(DAYS_PER_RUN)
            .collect();
        for day in &copy {
            if let Some((path, _)) = kept.remove(day) {
                remove.insert(path);
            }
        }
        if copy.is_empty() && remove.is_empty() {
            return Ok(0);
        }
        let partitions = self.partitions();
        let mut adds = Vec::with_capacity(copy.len());
        for day in &copy {
            let started = std::time::Instant::now();
            let hours: BTreeSet<i64> = partitions.range(day..&(day + DAY_HOURS)).copied().collect();
            let copies = wanted.get(day).cloned().unwrap_or_default();
            let rows = by_customer_and_hour(block_on(self.read_files(&hours, &copies))??)?;
            let Written(written) = days.write_frames(|emit| emit(rows, Role::Main))?;
            for mut add in written {
                let tags = add.tags.get_or_insert_with(Default::default);
                for (key, value) in Covers::tags(*day, &copies) {
                    tags.insert(key, Some(value));
                }
                adds.push(add);
            }
            crate::trace::phase(&format!("days/{} copy", days.spec.name), started);
        }
        // Derived and checked when read, a day table keeps its own count of commits.
        let next = block_on(days.last_batch())??.map_or(0, |b| b + 1);
        block_on(days.commit_written(next, Written(adds), &BTreeSet::new(), &remove))??;
        Ok(copy.len())
    }
}

/// `rows` ordered by customer, then hour (rows of one customer and hour in the order read).
/// A day repeats each customer's id in every hour: each distinct id's rank among the sorted
/// distinct ids, packed with the hour into one integer, is sorted instead of the ids
/// themselves, so strings are compared once per distinct id, not many times per row.
fn by_customer_and_hour(rows: DataFrame) -> Result<DataFrame> {
    const STEP: &str = "ordering a day by customer";
    let ids = rows
        .column(col::CUSTOMER_ID)
        .and_then(|c| c.str())
        .map_err(Error::polars(STEP))?;
    let hours = long_values(&rows, col::USAGE_HOUR, STEP)?;
    let mut known: FastMap<&str, u32> = FastMap::default();
    let mut distinct: Vec<&str> = Vec::new();
    let mut id_of_row = Vec::with_capacity(rows.height());
    for id in ids.iter() {
        let id = id.ok_or_else(|| Error::table_data(STEP, col::CUSTOMER_ID, "a null"))?;
        id_of_row.push(*known.entry(id).or_insert_with(|| {
            distinct.push(id);
            (distinct.len() - 1) as u32
        }));
    }
    let mut by_id: Vec<u32> = (0..distinct.len() as u32).collect();
    by_id.sort_unstable_by_key(|&i| distinct[i as usize]);
    let mut rank = vec![0u32; distinct.len()];
    for (r, &i) in by_id.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    let first_hour = hours.iter().copied().min().unwrap_or(0);
    let mut keys = Vec::with_capacity(rows.height());
    for (row, (&id, &hour)) in id_of_row.iter().zip(hours.iter()).enumerate() {
        let hour = u32::try_from(hour - first_hour)
            .map_err(|_| Error::table_data(STEP, col::USAGE_HOUR, "hours more than 2^32 apart"))?;
        keys.push((
            u64::from(rank[id as usize]) << 32 | u64::from(hour),
            row as IdxSize,
        ));
    }
    keys.sort_unstable();
    let order = IdxCa::from_vec("".into(), keys.into_iter().map(|(_, row)| row).collect());
    rows.take(&order).map_err(Error::polars(STEP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Location;
    use crate::table::schema::{CUMULATIVE_USAGE_DAYS, Values};
    use crate::table::{CUMULATIVE_USAGE, Spec};
    use crate::testing::TempDir;

    const CUSTOMERS: usize = 5_000;

    #[test]
    fn a_day_is_ordered_by_customer_then_hour() -> Result<()> {
        let frame = df!(
            col::CUSTOMER_ID => ["C2", "C10", "C2", "C1", "C10", "C1", "C1"],
            col::USAGE_HOUR => [5i64, 4, 4, 5, 5, 4, 4],
            col::USAGE_ML => [0i64, 1, 2, 3, 4, 5, 6],
        )
        .map_err(Error::polars("test"))?;
        let ordered = by_customer_and_hour(frame)?;
        // Byte order: C1 < C10 < C2; within a customer by hour; rows 5 and 6 tie, kept in order.
        assert_eq!(
            long_values(&ordered, col::USAGE_ML, "test")?.as_ref(),
            [5, 6, 3, 1, 4, 2, 0]
        );
        Ok(())
    }

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

    /// One row of customer `C00042` at `hour` appended to the table as a file of its own.
    fn append_row(table: &mut Table, hour: i64, usage: i64, batch: i64) -> Result<()> {
        let frame = CUMULATIVE_USAGE.frame(vec![
            Values::Str(vec!["C00042".into()]),
            Values::Long(vec![hour]),
            Values::Str(vec!["2026-03".into()]),
            Values::Long(vec![usage]),
            Values::Long(vec![hour]),
            Values::Bool(vec![true]),
        ])?;
        let written = table.write_frames(|emit| emit(frame, Role::Side))?;
        block_on(table.commit_written(batch, written, &BTreeSet::new(), &BTreeSet::new()))??;
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
        assert_eq!(table.write_days(&mut days, first + 23)?, 0);
        let (rows, groups, day_groups) = read(&source, &days_dir, &hours)?;
        assert_eq!(rows, expected(&|_| 7));
        assert_eq!((groups, day_groups), (51, 0));

        // The watermark in the third day: the first two are copied, once.
        let watermark = first + 49;
        assert_eq!(table.write_days(&mut days, watermark)?, 2);
        assert_eq!(
            table.write_days(&mut days, watermark)?,
            0,
            "nothing to copy again"
        );
        let (rows, groups, day_groups) = read(&source, &days_dir, &hours)?;
        assert_eq!(rows, expected(&|_| 7));
        assert_eq!(groups, 3, "the third day's hours from their files");
        assert!(
            (2..=4).contains(&day_groups),
            "a row group or two a day: {day_groups}"
        );
        // Hours of a day file are read alone, as any hours are.
        let some: BTreeSet<i64> = (first + 2..first + 4).collect();
        let (rows, groups, _) = read(&source, &days_dir, &some)?;
        assert_eq!(rows, vec![(first + 2, 7), (first + 3, 7)]);
        assert_eq!(groups, 0);

        // A file appended to an hour of the second day (as the zero rows of a customer new to
        // the month are): the day file is still read, with the added file beside it.
        let appended = first + 30;
        append_row(&mut table, appended, 3, 1)?;
        let mut with_added = expected(&|_| 7);
        with_added.push((appended, 3));
        with_added.sort_unstable();
        let (rows, groups, day_groups) = read(&source, &days_dir, &hours)?;
        assert_eq!(rows, with_added);
        assert_eq!(groups, 3 + 1, "the third day's hours and the added file");
        assert!((2..=4).contains(&day_groups), "{day_groups}");

        // An hour of the first day rewritten (a rebuild, a restored backup): that day is read
        // from the hour files again; the second still from its day file.
        let rewritten = BTreeSet::from([first + 5]);
        write_hours(&mut table, &rewritten, 1_000, 2)?;
        let mut now: Vec<(i64, i64)> = with_added
            .iter()
            .map(|&(h, u)| (h, if h == first + 5 { 1_000 } else { u }))
            .collect();
        now.sort_unstable();
        let (rows, groups, day_groups) = read(&source, &days_dir, &hours)?;
        assert_eq!(rows, now);
        assert_eq!(groups, 24 + 3 + 1);
        assert!((1..=2).contains(&day_groups), "{day_groups}");

        // The next copy replaces the first day's file, then the second's (with its added file).
        assert_eq!(table.write_days(&mut days, watermark)?, 2);
        assert_eq!(days.version_and_files().1, 2);
        let (rows, groups, _) = read(&source, &days_dir, &hours)?;
        assert_eq!(rows, now);
        assert_eq!(groups, 3);

        // Days out of reach of the watermark leave the day table.
        assert_eq!(table.write_days(&mut days, first + 24 * 60)?, 0);
        assert_eq!(days.version_and_files().1, 0);
        let (rows, groups, day_groups) = read(&source, &days_dir, &hours)?;
        assert_eq!(rows, now);
        assert_eq!((groups, day_groups), (51 + 1, 0));
        Ok(())
    }
}
