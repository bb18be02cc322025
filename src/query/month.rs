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
use crate::hashing::{FastMap, FastSet};
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
#[derive(Debug)]
pub struct MonthWalk {
    /// Each customer with new usage in the month: its first hour with some, and whether the
    /// month had no rows of it (it then gets a row in every hour of the month, zero before its
    /// first usage).
    first_change: FastMap<String, (i64, bool)>,
    /// The customers new to the month, in order.
    newcomers: BTreeSet<String>,
    /// Total through the previous hour of each customer being recomputed.
    carry: FastMap<String, i64>,
    /// Past the month's stored hours: every customer's row of the hour before.
    all: Option<HourRows>,
}

impl MonthWalk {
    /// A walk over a month whose new usage is `added` (`(customer, hour)`, any order) and whose
    /// stored rows name the customers `in_month`.
    pub fn new<'a>(
        added: impl IntoIterator<Item = (&'a str, i64)>,
        in_month: impl Fn(&str) -> bool,
    ) -> Self {
        let mut first_change: FastMap<String, (i64, bool)> = FastMap::default();
        for (customer, hour) in added {
            first_change
                .entry(customer.to_owned())
                .and_modify(|(h, _)| *h = (*h).min(hour))
                .or_insert((hour, false));
        }
        let mut newcomers = BTreeSet::new();
        for (customer, (_, new)) in &mut first_change {
            if !in_month(customer) {
                *new = true;
                newcomers.insert(customer.clone());
            }
        }
        Self {
            first_change,
            newcomers,
            carry: FastMap::default(),
            all: None,
        }
    }

    /// Customers new to the month.
    pub fn newcomers(&self) -> &BTreeSet<String> {
        &self.newcomers
    }

    /// Whether `customer`'s row in `hour` changes: it got new usage in or before the hour, or
    /// it is new to the month.
    fn changes(&self, customer: &str, hour: i64) -> bool {
        self.first_change
            .get(customer)
            .is_some_and(|&(first, new)| new || first <= hour)
    }

    /// The customers whose rows in `hour` change.
    pub fn changed(&self, hour: i64) -> impl Iterator<Item = &str> {
        self.first_change
            .iter()
            .filter(move |&(_, &(first, new))| new || first <= hour)
            .map(|(c, _)| c.as_str())
    }

    /// Rows of a stored hour after the run. `stored` holds the hour's stored rows (all of them,
    /// or a part that includes every row that changes), `added` its new usage. With `all_rows`
    /// (`stored` holds every row and hours after this one are new), the walk also keeps every
    /// customer's total for them. Rows of customers that do not change are returned as stored.
    pub fn stored_hour(
        &mut self,
        hour: i64,
        stored: &HourRows,
        added: &HourUsage<'_>,
        all_rows: bool,
    ) -> Result<HourRows> {
        let ids = stored.ids()?;
        let mut usage_ml = stored.values(col::USAGE_ML)?;
        let mut cumulative_ml = stored.values(col::CUMULATIVE_ML)?;
        let mut seen: FastSet<&str> = FastSet::default();
        for (i, customer) in ids.iter().enumerate() {
            let customer = customer.unwrap_or_default();
            if !self.changes(customer, hour) {
                continue;
            }
            let stored_usage = usage_ml[i];
            usage_ml[i] = add(stored_usage, added.get(customer).copied().unwrap_or(0))?;
            // The total carried from the hour before (updated in place: no new key).
            match self.carry.get_mut(customer) {
                Some(total) => {
                    cumulative_ml[i] = add(*total, usage_ml[i])?;
                    *total = cumulative_ml[i];
                }
                None => {
                    // The stored total through the hour before: this row's less its usage.
                    let before = cumulative_ml[i]
                        .checked_sub(stored_usage)
                        .ok_or_else(|| bad(col::CUMULATIVE_ML, "overflow"))?;
                    cumulative_ml[i] = add(before, usage_ml[i])?;
                    self.carry.insert(customer.to_owned(), cumulative_ml[i]);
                }
            }
            seen.insert(customer);
        }
        // Customers without a stored row: those new to the month, from their first usage.
        let missing: BTreeSet<String> = self
            .changed(hour)
            .filter(|c| !seen.contains(c))
            .map(str::to_owned)
            .collect();
        let mut joining = (Vec::new(), Vec::new(), Vec::new());
        for customer in missing {
            if !self.newcomers.contains(&customer) {
                return Err(bad(
                    col::CUSTOMER_ID,
                    format!(
                        "customer {customer} has no row in hour {} of a month it has rows in",
                        format_hour(hour)
                    ),
                ));
            }
            let usage = added.get(customer.as_str()).copied().unwrap_or(0);
            let total = add(self.carry.get(&customer).copied().unwrap_or(0), usage)?;
            self.carry.insert(customer.clone(), total);
            joining.0.push(customer);
            joining.1.push(usage);
            joining.2.push(total);
        }
        let out = stored.updated(usage_ml, cumulative_ml, joining)?;
        if all_rows {
            self.all = Some(out.clone());
        }
        Ok(out)
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
