//! What the table steps read to decide how much of an hour to rewrite (the rule is
//! `query::layout`'s): an hour's side set, the customers in `cumulative_usage`'s side files of
//! the hour, and the customers a billing month has rows of.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono_tz::Tz;

use crate::error::{Error, Result};
use crate::hashing::FastSet;
use crate::hours::{month_end_hour, month_start_hour};
use crate::query::layout::{self, Hourly};
use crate::table::{Role, Table, block_on, col, split_by_hour};

/// `cumulative_usage` as the layout decisions see it, with what was read of it so far.
pub(super) struct Sides<'a> {
    cumulative: &'a Table,
    tz: Tz,
    stored: BTreeSet<i64>,
    /// Hours with a file of `cumulative_usage` this pipeline did not tag (see
    /// [`Role::Foreign`]): their side set is unknown. (The hourly step writes an hour with a
    /// foreign `hourly_usage` file whole itself; the side sets must come from state that step
    /// does not change, so that the cumulative step, or its rerun, decides alike.)
    foreign: BTreeSet<i64>,
    /// Shared, not copied, with the steps that keep one for an hour's rewrite: a month's set
    /// holds every customer, and a side set every customer kept apart in the hour.
    side_sets: BTreeMap<i64, Option<Customers>>,
    months: BTreeMap<i64, Customers>,
}

impl<'a> Sides<'a> {
    pub(super) fn new(cumulative: &'a Table, tz: Tz) -> Self {
        Self {
            cumulative,
            tz,
            foreign: cumulative.hours_with(Role::Foreign),
            stored: cumulative.partitions(),
            side_sets: BTreeMap::new(),
            months: BTreeMap::new(),
        }
    }

    /// Reads the side sets of `hours` at once (their side files in one read, which fetches
    /// many files at a time), so that [`Sides::side_set`] finds them.
    pub(super) fn read_side_sets(&mut self, hours: impl IntoIterator<Item = i64>) -> Result<()> {
        let wanted: BTreeSet<i64> = hours
            .into_iter()
            .filter(|h| !self.side_sets.contains_key(h))
            .filter(|h| self.stored.contains(h) && !self.foreign.contains(h))
            .collect();
        let paths: BTreeSet<String> = wanted
            .iter()
            .flat_map(|&h| self.cumulative.files_of(h, Role::Side))
            .collect();
        let mut by_hour = if paths.is_empty() {
            BTreeMap::new()
        } else {
            let rows = block_on(self.cumulative.read_files(&wanted, &paths))??;
            split_by_hour(&rows, col::USAGE_HOUR)?
        };
        for hour in wanted {
            let set = match by_hour.remove(&hour) {
                Some(rows) => customers(&rows)?,
                None => FastSet::default(),
            };
            self.side_sets.insert(hour, Some(Arc::new(set)));
        }
        Ok(())
    }

    /// The side set of `hour`; `None` when `cumulative_usage` has no such hour, or has a file of
    /// the hour that another engine wrote (the hour of both tables is then rewritten whole).
    pub(super) fn side_set(&mut self, hour: i64) -> Result<Option<Customers>> {
        if !self.side_sets.contains_key(&hour) {
            let set = if self.stored.contains(&hour) && !self.foreign.contains(&hour) {
                let paths = self.cumulative.files_of(hour, Role::Side);
                let rows = if paths.is_empty() {
                    Default::default()
                } else {
                    block_on(self.cumulative.read_files(&BTreeSet::from([hour]), &paths))??
                };
                Some(Arc::new(customers(&rows)?))
            } else {
                None
            };
            self.side_sets.insert(hour, set);
        }
        Ok(self.side_sets.get(&hour).cloned().flatten())
    }

    /// The customers with rows in `hour`'s billing month: those of the month's latest stored
    /// hour (the table is dense).
    pub(super) fn month_customers(&mut self, hour: i64) -> Result<Customers> {
        let start = month_start_hour(hour, self.tz)?;
        Ok(match self.months.entry(start) {
            Entry::Occupied(known) => known.get().clone(),
            Entry::Vacant(slot) => {
                let end = month_end_hour(start, self.tz)?;
                let set = match self.stored.range(start..end).next_back() {
                    Some(&last) => customers(&block_on(
                        self.cumulative.read_hours(&BTreeSet::from([last])),
                    )??)?,
                    None => FastSet::default(),
                };
                slot.insert(Arc::new(set)).clone()
            }
        })
    }

    /// What `hourly_usage` rewrites of `hour`, whose customers `changed` got new usage.
    pub(super) fn hourly(&mut self, hour: i64, changed: &FastSet<String>) -> Result<Hourly> {
        let fits = match self.side_set(hour)? {
            None => return Ok(Hourly::Whole),
            Some(side) => changed.iter().all(|c| side.contains(c)),
        };
        if fits {
            return Ok(Hourly::Side);
        }
        let side = self.side_set(hour)?;
        let month = self.month_customers(hour)?;
        Ok(layout::hourly(
            side.as_deref(),
            changed.iter().map(String::as_str),
            |c| month.contains(c),
        ))
    }
}

/// A set of customers, shared.
pub(super) type Customers = Arc<FastSet<String>>;

/// The distinct `customer_id`s of `rows`.
pub(super) fn customers(rows: &polars::prelude::DataFrame) -> Result<FastSet<String>> {
    if rows.width() == 0 {
        return Ok(FastSet::default());
    }
    let ids = rows
        .column(col::CUSTOMER_ID)
        .and_then(|c| c.str().cloned())
        .map_err(Error::polars("layout"))?;
    Ok(ids.iter().flatten().map(str::to_owned).collect())
}
