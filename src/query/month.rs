//! One billing month's `cumulative_usage` rows, carried forward hour by hour from a run's new
//! usage ([`MonthWalk`]), and one hour's rows ([`HourRows`]).
//!
//! Only the rows of customers whose usage changed are recomputed: a stored row's total through
//! the hour before is its total less its usage, so a customer's recomputation starts at its
//! first changed hour without reading any earlier one, and every other customer's row is kept
//! as stored. Sums are exact `i64` milliliters, overflow-checked.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use polars::prelude::{Column, DataFrame};

use crate::error::{Error, Result};
use crate::hours::format_hour;
use crate::table::{CUMULATIVE_USAGE, Values, col};

/// Rows of one hour of a billing month (`customer_id`, `usage_ml`, `cumulative_ml`), sorted by
/// customer, one row per customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourRows {
    /// `customer_id`.
    pub customers: Vec<String>,
    /// The hour's usage.
    pub usage_ml: Vec<i64>,
    /// The running total through the hour.
    pub cumulative_ml: Vec<i64>,
}

impl HourRows {
    /// The rows of a `cumulative_usage` frame (one hour's, any order).
    pub fn from_frame(rows: &DataFrame) -> Result<Self> {
        let err = Error::polars("cumulative");
        let ids = rows
            .column(col::CUSTOMER_ID)
            .and_then(|c| c.str().cloned())
            .map_err(err)?;
        let long = |name: &str| -> Result<Vec<i64>> {
            let c = rows
                .column(name)
                .and_then(|c| c.i64().cloned())
                .map_err(err)?;
            if c.null_count() > 0 {
                return Err(Error::table_data(
                    CUMULATIVE_USAGE.name,
                    name,
                    "null values",
                ));
            }
            Ok(c.into_no_null_iter().collect())
        };
        if ids.null_count() > 0 {
            return Err(Error::table_data(
                CUMULATIVE_USAGE.name,
                col::CUSTOMER_ID,
                "null values",
            ));
        }
        let rows = Self {
            customers: ids.iter().flatten().map(str::to_owned).collect(),
            usage_ml: long(col::USAGE_ML)?,
            cumulative_ml: long(col::CUMULATIVE_ML)?,
        };
        rows.sorted()
    }

    /// The rows sorted by customer; two rows of one customer are an error.
    fn sorted(self) -> Result<Self> {
        let mut order: Vec<usize> = (0..self.customers.len()).collect();
        order.sort_unstable_by(|&a, &b| self.customers[a].cmp(&self.customers[b]));
        if let Some(pair) = order
            .windows(2)
            .find(|w| self.customers[w[0]] == self.customers[w[1]])
        {
            return Err(Error::table_data(
                CUMULATIVE_USAGE.name,
                col::CUSTOMER_ID,
                format!(
                    "customer {} has two rows in one hour",
                    self.customers[pair[0]]
                ),
            ));
        }
        if order.iter().enumerate().all(|(i, &o)| i == o) {
            return Ok(self);
        }
        Ok(Self {
            customers: order.iter().map(|&i| self.customers[i].clone()).collect(),
            usage_ml: order.iter().map(|&i| self.usage_ml[i]).collect(),
            cumulative_ml: order.iter().map(|&i| self.cumulative_ml[i]).collect(),
        })
    }

    /// These rows and `other`'s, sorted; a customer in both is an error.
    pub fn with(mut self, other: Self) -> Result<Self> {
        self.customers.extend(other.customers);
        self.usage_ml.extend(other.usage_ml);
        self.cumulative_ml.extend(other.cumulative_ml);
        self.sorted()
    }

    fn len(&self) -> usize {
        self.customers.len()
    }

    fn push(&mut self, customer: &str, usage_ml: i64, cumulative_ml: i64) {
        self.customers.push(customer.to_owned());
        self.usage_ml.push(usage_ml);
        self.cumulative_ml.push(cumulative_ml);
    }

    /// The rows of customers for which `side` holds, and the others (in that order).
    pub fn split(self, side: impl Fn(&str) -> bool) -> (Self, Self) {
        let (mut a, mut b) = (Self::default(), Self::default());
        for i in 0..self.customers.len() {
            let to = if side(&self.customers[i]) {
                &mut a
            } else {
                &mut b
            };
            to.push(&self.customers[i], self.usage_ml[i], self.cumulative_ml[i]);
        }
        (a, b)
    }

    /// The rows as `cumulative_usage` rows of `hour` in `billing_month`.
    pub fn to_frame(&self, hour: i64, billing_month: &str, is_final: bool) -> Result<DataFrame> {
        let n = self.customers.len();
        CUMULATIVE_USAGE.frame(vec![
            Values::Built(Column::new(col::CUSTOMER_ID.into(), &self.customers)),
            Values::Long(vec![hour; n]),
            Values::Str(vec![billing_month.into(); n]),
            Values::Long(self.usage_ml.clone()),
            Values::Long(self.cumulative_ml.clone()),
            Values::Bool(vec![is_final; n]),
        ])
    }
}

fn add(a: i64, b: i64) -> Result<i64> {
    a.checked_add(b).ok_or_else(|| {
        Error::table_data(
            CUMULATIVE_USAGE.name,
            col::CUMULATIVE_ML,
            "a running total overflows Int64 milliliters",
        )
    })
}

/// New usage by customer in one hour.
pub type HourUsage<'a> = HashMap<&'a str, i64>;

/// One billing month's rows rewritten hour by hour, from its first changed hour on.
#[derive(Debug)]
pub struct MonthWalk {
    /// Each customer with new usage in the month: its first hour with some.
    first_change: HashMap<String, i64>,
    /// Customers with new usage that the month had no rows of: they get a row in every hour
    /// of the month (zero before their first usage).
    newcomers: BTreeSet<String>,
    /// Total through the previous hour of each customer being recomputed.
    carry: HashMap<String, i64>,
    /// Past the month's stored hours: every customer's total through the previous hour.
    all: BTreeMap<String, i64>,
}

impl MonthWalk {
    /// A walk over a month whose new usage is `added` (`(customer, hour)`, any order) and whose
    /// stored rows name the customers `in_month`.
    pub fn new<'a>(
        added: impl IntoIterator<Item = (&'a str, i64)>,
        in_month: impl Fn(&str) -> bool,
    ) -> Self {
        let mut first_change: HashMap<String, i64> = HashMap::new();
        for (customer, hour) in added {
            first_change
                .entry(customer.to_owned())
                .and_modify(|h| *h = (*h).min(hour))
                .or_insert(hour);
        }
        let newcomers = first_change
            .keys()
            .filter(|c| !in_month(c))
            .cloned()
            .collect();
        Self {
            first_change,
            newcomers,
            carry: HashMap::new(),
            all: BTreeMap::new(),
        }
    }

    /// Customers new to the month.
    pub fn newcomers(&self) -> &BTreeSet<String> {
        &self.newcomers
    }

    /// Whether `customer`'s row in `hour` changes: it got new usage in or before the hour, or
    /// it is new to the month.
    fn changes(&self, customer: &str, hour: i64) -> bool {
        self.first_change.get(customer).is_some_and(|&h| h <= hour)
            || self.newcomers.contains(customer)
    }

    /// The customers whose rows in `hour` change.
    pub fn changed(&self, hour: i64) -> impl Iterator<Item = &str> {
        self.first_change
            .iter()
            .filter(move |&(_, &h)| h <= hour)
            .map(|(c, _)| c.as_str())
            .chain(self.newcomers.iter().map(String::as_str))
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
        let mut out = HourRows::default();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for i in 0..stored.len() {
            let customer = stored.customers[i].as_str();
            if self.changes(customer, hour) {
                let before = match self.carry.get(customer) {
                    Some(&total) => total,
                    // The stored total through the hour before: this row's less its usage.
                    None => stored.cumulative_ml[i]
                        .checked_sub(stored.usage_ml[i])
                        .ok_or_else(|| {
                            Error::table_data(CUMULATIVE_USAGE.name, col::CUMULATIVE_ML, "overflow")
                        })?,
                };
                let usage = add(
                    stored.usage_ml[i],
                    added.get(customer).copied().unwrap_or(0),
                )?;
                let total = add(before, usage)?;
                self.carry.insert(customer.to_owned(), total);
                out.push(customer, usage, total);
                seen.insert(customer);
            } else {
                out.push(customer, stored.usage_ml[i], stored.cumulative_ml[i]);
            }
        }
        // Customers without a stored row: those new to the month, from their first usage.
        let missing: BTreeSet<String> = self
            .changed(hour)
            .filter(|c| !seen.contains(c))
            .map(str::to_owned)
            .collect();
        for customer in &missing {
            let customer = customer.as_str();
            if !self.newcomers.contains(customer) {
                return Err(Error::table_data(
                    CUMULATIVE_USAGE.name,
                    col::CUSTOMER_ID,
                    format!(
                        "customer {customer} has no row in hour {} of a month it has rows in",
                        format_hour(hour)
                    ),
                ));
            }
            let usage = added.get(customer).copied().unwrap_or(0);
            let total = add(self.carry.get(customer).copied().unwrap_or(0), usage)?;
            self.carry.insert(customer.to_owned(), total);
            out.push(customer, usage, total);
        }
        let out = out.sorted()?;
        if all_rows {
            self.all = out
                .customers
                .iter()
                .cloned()
                .zip(out.cumulative_ml.iter().copied())
                .collect();
        }
        Ok(out)
    }

    /// Starts the walk past the month's stored hours, after the last of them, whose rows
    /// (`stored`, all of them) did not change.
    pub fn continue_from(&mut self, stored: &HourRows) {
        self.all = stored
            .customers
            .iter()
            .cloned()
            .zip(stored.cumulative_ml.iter().copied())
            .collect();
    }

    /// Rows of an hour the month had no rows for: every customer of the month, with its total
    /// carried from the hour before and the hour's usage (0 when none).
    pub fn new_hour(&mut self, added: &HourUsage<'_>) -> Result<HourRows> {
        let joining = added
            .keys()
            .copied()
            .chain(self.newcomers.iter().map(String::as_str));
        for customer in joining {
            if !self.all.contains_key(customer) {
                self.all.insert(customer.to_owned(), 0);
            }
        }
        let mut out = HourRows::default();
        for (customer, total) in &mut self.all {
            let usage = added.get(customer.as_str()).copied().unwrap_or(0);
            *total = add(*total, usage)?;
            out.push(customer, usage, *total);
        }
        Ok(out)
    }

    /// Zero rows, in an hour before the month's rewritten range, for the customers new to the
    /// month (their first usage comes later).
    pub fn zero_rows(&self) -> HourRows {
        let mut out = HourRows::default();
        for customer in &self.newcomers {
            out.push(customer, 0, 0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(list: &[(&str, i64, i64)]) -> HourRows {
        let mut out = HourRows::default();
        for &(c, u, t) in list {
            out.push(c, u, t);
        }
        out
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
    fn a_missing_or_doubled_row_is_an_error() {
        let mut walk = MonthWalk::new([("A", 1)], |c| c == "A");
        // A has rows in the month, but not in this hour.
        assert!(matches!(
            walk.stored_hour(1, &rows(&[("B", 0, 0)]), &HourUsage::new(), false),
            Err(Error::TableData { .. })
        ));
        assert!(matches!(
            rows(&[("A", 1, 1), ("A", 1, 1)]).sorted(),
            Err(Error::TableData { .. })
        ));
    }
}
