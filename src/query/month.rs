//! One billing month's `cumulative_usage` rows, carried forward hour by hour from a run's new
//! usage ([`MonthWalk`]), and one hour's rows ([`HourRows`]).
//!
//! Only the rows of customers whose usage changed are recomputed: a stored row's total through
//! the hour before is its total less its usage, so a customer's recomputation starts at its
//! first changed hour without reading any earlier one, and every other customer's row is kept
//! as stored (its values are copied as columns, never row by row). Sums are exact `i64`
//! milliliters, overflow-checked.

use std::collections::BTreeSet;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::hashing::FastMap;
use crate::hours::format_hour;
use crate::table::{CUMULATIVE_USAGE, col, long_column};

/// Rows of one hour of a billing month (`customer_id`, `usage_ml`, `cumulative_ml`), sorted by
/// customer, one row per customer.
#[derive(Debug, Clone)]
pub struct HourRows {
    frame: DataFrame,
}

fn bad(column: &str, reason: impl Into<String>) -> Error {
    Error::table_data(CUMULATIVE_USAGE.name, column, reason)
}

const COLUMNS: [&str; 3] = [col::CUSTOMER_ID, col::USAGE_ML, col::CUMULATIVE_ML];

impl HourRows {
    /// No rows.
    pub fn empty() -> Self {
        Self::from_parts(Vec::new(), Vec::new(), Vec::new())
    }

    /// These rows with new `usage_ml` and `cumulative_ml` columns (one value per row, in
    /// order), followed by the rows of the customers `joining` (ids, usage, totals).
    fn updated(
        &self,
        usage_ml: Vec<i64>,
        cumulative_ml: Vec<i64>,
        joining: (Vec<String>, Vec<i64>, Vec<i64>),
    ) -> Result<Self> {
        let mut frame = self.frame.clone();
        for (name, values) in [
            (col::USAGE_ML, usage_ml),
            (col::CUMULATIVE_ML, cumulative_ml),
        ] {
            frame
                .with_column(long_column(name, values))
                .map_err(|e| bad(name, e.to_string()))?;
        }
        HourRows { frame }.with(Self::from_parts(joining.0, joining.1, joining.2))
    }

    fn from_parts(customers: Vec<String>, usage_ml: Vec<i64>, cumulative_ml: Vec<i64>) -> Self {
        let n = customers.len();
        let frame = DataFrame::new(
            n,
            vec![
                Column::new(col::CUSTOMER_ID.into(), customers),
                long_column(col::USAGE_ML, usage_ml),
                long_column(col::CUMULATIVE_ML, cumulative_ml),
            ],
        );
        // Three columns of one length and distinct names: cannot fail.
        Self {
            frame: frame.unwrap_or_default(),
        }
    }

    /// The rows of a `cumulative_usage` frame (one hour's, any order); nulls, or two rows of
    /// one customer, are an error.
    pub fn from_frame(rows: &DataFrame) -> Result<Self> {
        let frame = rows.select(COLUMNS).map_err(|e| bad("*", e.to_string()))?;
        for name in COLUMNS {
            let nulls = frame.column(name).map_or(0, Column::null_count);
            if nulls > 0 {
                return Err(bad(name, format!("{nulls} null values")));
            }
        }
        Self { frame }.sorted()
    }

    fn ids(&self) -> Result<&StringChunked> {
        self.frame
            .column(col::CUSTOMER_ID)
            .and_then(Column::str)
            .map_err(|e| bad(col::CUSTOMER_ID, e.to_string()))
    }

    fn values(&self, name: &str) -> Result<Vec<i64>> {
        let c = self
            .frame
            .column(name)
            .and_then(Column::i64)
            .map_err(|e| bad(name, e.to_string()))?;
        Ok(c.into_no_null_iter().collect())
    }

    /// The rows sorted by customer; two rows of one customer are an error.
    fn sorted(self) -> Result<Self> {
        let ids = self.ids()?;
        let mut previous: Option<&str> = None;
        let mut in_order = true;
        for id in ids.iter() {
            if id <= previous && previous.is_some() {
                in_order = false;
                break;
            }
            previous = id;
        }
        let frame = if in_order {
            return Ok(self);
        } else {
            self.frame
                .sort([col::CUSTOMER_ID], SortMultipleOptions::default())
                .map_err(|e| bad(col::CUSTOMER_ID, e.to_string()))?
        };
        let sorted = Self { frame };
        let ids = sorted.ids()?;
        let mut previous: Option<&str> = None;
        for id in ids.iter() {
            if id == previous {
                return Err(bad(
                    col::CUSTOMER_ID,
                    format!(
                        "customer {} has two rows in one hour",
                        id.unwrap_or_default()
                    ),
                ));
            }
            previous = id;
        }
        Ok(sorted)
    }

    /// These rows and `other`'s, sorted; a customer in both is an error.
    pub fn with(self, other: Self) -> Result<Self> {
        if other.frame.height() == 0 {
            return Ok(self);
        }
        let frame = self
            .frame
            .vstack(&other.frame)
            .map_err(|e| bad("*", e.to_string()))?;
        Self { frame }.sorted()
    }

    fn len(&self) -> usize {
        self.frame.height()
    }

    /// The rows of customers for which `side` holds, and the others (in that order).
    pub fn split(self, side: impl Fn(&str) -> bool) -> Result<(Self, Self)> {
        let mask: BooleanChunked = self
            .ids()?
            .iter()
            .map(|c| Some(c.is_some_and(&side)))
            .collect();
        let pick = |mask: &BooleanChunked| -> Result<Self> {
            let frame = self
                .frame
                .filter(mask)
                .map_err(|e| bad("*", e.to_string()))?;
            Ok(Self { frame })
        };
        Ok((pick(&mask)?, pick(&!&mask)?))
    }

    /// The rows as `cumulative_usage` rows of `hour` in `billing_month`.
    pub fn to_frame(&self, hour: i64, billing_month: &str, is_final: bool) -> Result<DataFrame> {
        let n = self.len();
        let mut frame = self.frame.clone();
        let columns = [
            Column::new(col::USAGE_HOUR.into(), [hour]).new_from_index(0, n),
            Column::new(col::BILLING_MONTH.into(), [billing_month]).new_from_index(0, n),
            Column::new(col::IS_FINAL.into(), [is_final]).new_from_index(0, n),
        ];
        for column in columns {
            frame
                .with_column(column)
                .map_err(|e| bad("*", e.to_string()))?;
        }
        let order: Vec<&str> = CUMULATIVE_USAGE.columns.iter().map(|c| c.0).collect();
        frame.select(order).map_err(|e| bad("*", e.to_string()))
    }
}

impl PartialEq for HourRows {
    fn eq(&self, other: &Self) -> bool {
        self.frame.equals(&other.frame)
    }
}

fn add(a: i64, b: i64) -> Result<i64> {
    a.checked_add(b).ok_or_else(|| {
        bad(
            col::CUMULATIVE_ML,
            "a running total overflows Int64 milliliters",
        )
    })
}

/// New usage by customer in one hour.
pub type HourUsage<'a> = FastMap<&'a str, i64>;

/// One billing month's rows rewritten hour by hour, from its first changed hour on.
///
/// The customers with new usage in the month are numbered in their sort order, so a stored
/// hour's rows (sorted by customer) are matched to them in one merge pass, and what the walk
/// keeps of each (its first changed hour, its carried total, whether the current hour has its
/// row) is a list indexed by that number, not a map keyed by the customer's id.
#[derive(Debug)]
pub struct MonthWalk {
    /// The customers with new usage in the month, sorted by id.
    changing: Vec<Changing>,
    /// Each customer's number (its place in `changing`).
    number: FastMap<String, usize>,
    /// The customers new to the month, in order.
    newcomers: BTreeSet<String>,
    /// The hours the walk has read stored rows of, counted (marks `Changing::seen`).
    hours_read: u64,
    /// Past the month's stored hours: every customer's row of the hour before.
    all: Option<HourRows>,
}

/// A customer with new usage in the month, as the walk keeps it.
#[derive(Debug, Clone)]
struct Changing {
    id: String,
    /// Its first hour with new usage.
    first: i64,
    /// The month had no rows of it: it gets a row in every hour of the month, zero before its
    /// first usage.
    new: bool,
    /// Its total through the hour before the one being walked, once the walk has one.
    carry: Option<i64>,
    /// The last stored hour (counted by `MonthWalk::hours_read`) that had its row.
    seen: u64,
    /// Its new usage in the stored hour being walked (set, used and reset within one).
    usage: i64,
}

impl Changing {
    fn changes(&self, hour: i64) -> bool {
        self.new || self.first <= hour
    }
}

impl MonthWalk {
    /// A walk over a month whose new usage is `added` (`(customer, hour)`, any order) and whose
    /// stored rows name the customers `in_month`.
    pub fn new<'a>(
        added: impl IntoIterator<Item = (&'a str, i64)>,
        in_month: impl Fn(&str) -> bool,
    ) -> Self {
        let mut first_change: FastMap<&str, i64> = FastMap::default();
        for (customer, hour) in added {
            first_change
                .entry(customer)
                .and_modify(|h| *h = (*h).min(hour))
                .or_insert(hour);
        }
        let mut sorted: Vec<(&str, i64)> = first_change.into_iter().collect();
        sorted.sort_unstable();
        let mut newcomers = BTreeSet::new();
        let changing: Vec<Changing> = sorted
            .iter()
            .map(|&(customer, first)| {
                let new = !in_month(customer);
                if new {
                    newcomers.insert(customer.to_owned());
                }
                Changing {
                    id: customer.to_owned(),
                    first,
                    new,
                    carry: None,
                    seen: 0,
                    usage: 0,
                }
            })
            .collect();
        let number = sorted.iter().map(|&(c, _)| c.to_owned()).zip(0..).collect();
        Self {
            changing,
            number,
            newcomers,
            hours_read: 0,
            all: None,
        }
    }

    /// Customers new to the month.
    pub fn newcomers(&self) -> &BTreeSet<String> {
        &self.newcomers
    }

    /// The customers whose rows in `hour` change (sorted): new usage in or before the hour, or
    /// new to the month.
    pub fn changed(&self, hour: i64) -> impl Iterator<Item = &str> {
        self.changing
            .iter()
            .filter(move |c| c.changes(hour))
            .map(|c| c.id.as_str())
    }

    /// Rows of a stored hour after the run. `stored` holds the hour's stored rows (all of them,
    /// or a part that includes every row that changes), `added` its new usage. With `all_rows`
    /// (`stored` holds every row and hours after this one are new), the walk also keeps every
    /// customer's total for them. Rows of customers that do not change are returned as stored.
    /// (`stored`, an [`HourRows`], is sorted by customer: the walk matches its rows in order.)
    pub fn stored_hour(
        &mut self,
        hour: i64,
        stored: &HourRows,
        added: &HourUsage<'_>,
        all_rows: bool,
    ) -> Result<HourRows> {
        self.hours_read += 1;
        let this_hour = self.hours_read;
        // Every customer with usage is numbered before any usage is set, so that an error
        // leaves no usage behind for a later hour.
        let mut numbered = Vec::with_capacity(added.len());
        for (&customer, &usage) in added {
            let Some(&k) = self.number.get(customer) else {
                return Err(bad(
                    col::CUSTOMER_ID,
                    format!(
                        "customer {customer} has usage in hour {} the month's walk was not given",
                        format_hour(hour)
                    ),
                ));
            };
            numbered.push((k, usage));
        }
        for &(k, usage) in &numbered {
            if let Some(changing) = self.changing.get_mut(k) {
                changing.usage = usage;
            }
        }
        let out = self.stored_rows(hour, stored, this_hour);
        for (k, _) in numbered {
            if let Some(changing) = self.changing.get_mut(k) {
                changing.usage = 0;
            }
        }
        let out = out?;
        if all_rows {
            self.all = Some(out.clone());
        }
        Ok(out)
    }

    /// [`MonthWalk::stored_hour`] once the hour's usage is in `self.changing`.
    fn stored_rows(&mut self, hour: i64, stored: &HourRows, this_hour: u64) -> Result<HourRows> {
        let ids = stored.ids()?;
        let mut usage_ml = stored.values(col::USAGE_ML)?;
        let mut cumulative_ml = stored.values(col::CUMULATIVE_ML)?;
        // Both the rows and `changing` are sorted by id: one merge pass finds the rows that
        // change.
        let mut changing = self.changing.iter_mut().peekable();
        for (i, id) in ids.iter().enumerate() {
            let id = id.unwrap_or_default();
            while changing.next_if(|c| c.id.as_str() < id).is_some() {}
            let Some(customer) = changing.next_if(|c| c.id == id) else {
                continue;
            };
            if !customer.changes(hour) {
                continue;
            }
            let stored_usage = usage_ml[i];
            usage_ml[i] = add(stored_usage, customer.usage)?;
            // The total through the hour before: carried, or this stored row's less its usage.
            let before = match customer.carry {
                Some(total) => total,
                None => cumulative_ml[i]
                    .checked_sub(stored_usage)
                    .ok_or_else(|| bad(col::CUMULATIVE_ML, "overflow"))?,
            };
            cumulative_ml[i] = add(before, usage_ml[i])?;
            customer.carry = Some(cumulative_ml[i]);
            customer.seen = this_hour;
        }
        // Customers without a stored row (in sorted order): those new to the month, from
        // their first usage.
        let mut joining = (Vec::new(), Vec::new(), Vec::new());
        for customer in &mut self.changing {
            if !customer.changes(hour) || customer.seen == this_hour {
                continue;
            }
            if !customer.new {
                return Err(bad(
                    col::CUSTOMER_ID,
                    format!(
                        "customer {} has no row in hour {} of a month it has rows in",
                        customer.id,
                        format_hour(hour)
                    ),
                ));
            }
            let usage = customer.usage;
            let total = add(customer.carry.unwrap_or(0), usage)?;
            customer.carry = Some(total);
            joining.0.push(customer.id.clone());
            joining.1.push(usage);
            joining.2.push(total);
        }
        stored.updated(usage_ml, cumulative_ml, joining)
    }

    /// Starts the walk past the month's stored hours, after the last of them, whose rows
    /// (`stored`, all of them) did not change.
    pub fn continue_from(&mut self, stored: &HourRows) {
        self.all = Some(stored.clone());
    }

    /// Rows of an hour the month had no rows for: every customer of the month, with its total
    /// carried from the hour before and the hour's usage (0 when none).
    pub fn new_hour(&mut self, added: &HourUsage<'_>) -> Result<HourRows> {
        let base = self.all.take().unwrap_or_else(HourRows::empty);
        let ids = base.ids()?;
        let before = base.values(col::CUMULATIVE_ML)?;
        let mut usage_ml = Vec::with_capacity(before.len());
        let mut cumulative_ml = Vec::with_capacity(before.len());
        for (customer, total) in ids.iter().zip(before) {
            let usage = added
                .get(customer.unwrap_or_default())
                .copied()
                .unwrap_or(0);
            usage_ml.push(usage);
            cumulative_ml.push(add(total, usage)?);
        }
        // Customers the hour before did not have: new to the month (zero until they use some).
        let mut joining = (Vec::new(), Vec::new(), Vec::new());
        let candidates: BTreeSet<&str> = added
            .keys()
            .copied()
            .chain(self.newcomers.iter().map(String::as_str))
            .collect();
        for customer in not_among(ids, &candidates) {
            let usage = added.get(customer).copied().unwrap_or(0);
            joining.0.push(customer.to_owned());
            joining.1.push(usage);
            joining.2.push(usage);
        }
        let out = base.updated(usage_ml, cumulative_ml, joining)?;
        self.all = Some(out.clone());
        Ok(out)
    }

    /// Zero rows, in an hour before the month's rewritten range, for the customers new to the
    /// month (their first usage comes later).
    pub fn zero_rows(&self) -> HourRows {
        let n = self.newcomers.len();
        HourRows::from_parts(
            self.newcomers.iter().cloned().collect(),
            vec![0; n],
            vec![0; n],
        )
    }
}

/// The `candidates` that are not among `ids`. Both are sorted, so one merge pass: a new hour's
/// candidates are every customer with usage in it, as many as `ids` at a month's start.
fn not_among<'a>(ids: &StringChunked, candidates: &BTreeSet<&'a str>) -> Vec<&'a str> {
    let mut ids = ids.iter().flatten().peekable();
    candidates
        .iter()
        .copied()
        .filter(|&c| {
            while ids.next_if(|&id| id < c).is_some() {}
            ids.peek() != Some(&c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(list: &[(&str, i64, i64)]) -> HourRows {
        HourRows::from_parts(
            list.iter().map(|r| r.0.to_owned()).collect(),
            list.iter().map(|r| r.1).collect(),
            list.iter().map(|r| r.2).collect(),
        )
    }

    #[test]
    fn only_changed_customers_are_recomputed() -> Result<()> {
        // Hours 1..=3 stored: A steady, B replays usage into hours 1 and 2, C is new in hour 2.
        let stored = [
            rows(&[("A", 5, 5), ("B", 0, 0)]),
            rows(&[("A", 1, 6), ("B", 0, 0)]),
            rows(&[("A", 2, 8), ("B", 0, 0)]),
        ];
        let added = [("B", 1), ("B", 2), ("C", 2), ("A", 4), ("D", 4)];
        let month: BTreeSet<&str> = ["A", "B"].into();
        let mut walk = MonthWalk::new(added, |c| month.contains(c));
        assert_eq!(walk.newcomers(), &BTreeSet::from(["C".into(), "D".into()]));
        let usage =
            |list: &[(&'static str, i64)]| -> HourUsage<'static> { list.iter().copied().collect() };
        // B's side part alone is enough in hour 1 (A does not change); the customers new to
        // the month get zero rows before their first usage.
        let one = walk.stored_hour(1, &rows(&[("B", 0, 0)]), &usage(&[("B", 7)]), false)?;
        assert_eq!(one, rows(&[("B", 7, 7), ("C", 0, 0), ("D", 0, 0)]));
        let two = walk.stored_hour(2, &stored[1], &usage(&[("B", 3), ("C", 4)]), false)?;
        assert_eq!(
            two,
            rows(&[("A", 1, 6), ("B", 3, 10), ("C", 4, 4), ("D", 0, 0)])
        );
        // The last stored hour, read whole: totals carry on into the new hour.
        let three = walk.stored_hour(3, &stored[2], &usage(&[]), true)?;
        assert_eq!(
            three,
            rows(&[("A", 2, 8), ("B", 0, 10), ("C", 0, 4), ("D", 0, 0)])
        );
        let four = walk.new_hour(&usage(&[("A", 1), ("D", 9)]))?;
        assert_eq!(
            four,
            rows(&[("A", 1, 9), ("B", 0, 10), ("C", 0, 4), ("D", 9, 9)])
        );
        Ok(())
    }

    #[test]
    fn changed_rows_are_found_among_unchanged_ones_in_byte_order() -> Result<()> {
        // Stored rows in byte order (C1 < C10 < C2 < D); B and C10 change from hour 5 on, the
        // others keep their stored rows.
        let stored = rows(&[
            ("A", 1, 10),
            ("B", 2, 20),
            ("C1", 3, 30),
            ("C10", 4, 40),
            ("C2", 5, 50),
            ("D", 6, 60),
        ]);
        let month: BTreeSet<&str> = ["A", "B", "C1", "C10", "C2", "D"].into();
        let mut walk = MonthWalk::new([("C10", 5), ("B", 6)], |c| month.contains(c));
        let usage =
            |list: &[(&'static str, i64)]| -> HourUsage<'static> { list.iter().copied().collect() };
        // Hour 5: only C10 changes (B's first new usage is in hour 6): 4 + 7 = 11 used, its
        // total 40 - 4 + 11 = 47.
        let five = walk.stored_hour(5, &stored, &usage(&[("C10", 7)]), false)?;
        assert_eq!(
            five,
            rows(&[
                ("A", 1, 10),
                ("B", 2, 20),
                ("C1", 3, 30),
                ("C10", 11, 47),
                ("C2", 5, 50),
                ("D", 6, 60),
            ])
        );
        // Hour 6 (the same stored rows stand in for it): B 2 + 1 = 3 used, 20 - 2 + 3 = 21;
        // C10 carries 47 and adds its stored 4.
        let six = walk.stored_hour(6, &stored, &usage(&[("B", 1)]), false)?;
        assert_eq!(
            six,
            rows(&[
                ("A", 1, 10),
                ("B", 3, 21),
                ("C1", 3, 30),
                ("C10", 4, 51),
                ("C2", 5, 50),
                ("D", 6, 60),
            ])
        );
        Ok(())
    }

    #[test]
    fn usage_of_a_customer_the_walk_was_not_given_is_an_error() {
        let mut walk = MonthWalk::new([("A", 1)], |c| c == "A");
        let added: HourUsage<'_> = [("A", 1), ("B", 2)].into_iter().collect();
        assert!(matches!(
            walk.stored_hour(1, &rows(&[("A", 0, 0), ("B", 0, 0)]), &added, false),
            Err(Error::TableData { .. })
        ));
    }

    #[test]
    fn candidates_not_among_sorted_ids() {
        let candidates: BTreeSet<&str> = ["A", "B", "C", "D", "E"].into();
        let ids = StringChunked::from_slice("customer_id".into(), &["B", "D"]);
        assert_eq!(not_among(&ids, &candidates), ["A", "C", "E"]);
        let all = StringChunked::from_slice("customer_id".into(), &["A", "B", "C", "D", "E"]);
        assert!(not_among(&all, &candidates).is_empty());
        let none = StringChunked::from_slice("customer_id".into(), &[] as &[&str]);
        assert_eq!(not_among(&none, &candidates).len(), 5);
    }

    #[test]
    fn a_missing_or_doubled_row_is_an_error() {
        let mut walk = MonthWalk::new([("A", 1)], |c| c == "A");
        // A has rows in the month, but not in this hour.
        assert!(matches!(
            walk.stored_hour(1, &rows(&[("B", 0, 0)]), &HourUsage::default(), false),
            Err(Error::TableData { .. })
        ));
        assert!(matches!(
            rows(&[("A", 1, 1), ("A", 1, 1)]).sorted(),
            Err(Error::TableData { .. })
        ));
    }
}
