//! The per-customer merge both table steps run for every customer of every hour they rewrite:
//! sums of `Int64` columns of two frames by customer, in one pass over inputs sorted by customer
//! (a stored partition, the previous hour's output), exact and overflow-checked, rather than a
//! hash join and a sort.

use polars::prelude::*;

use crate::table::col;

pub(super) fn overflow() -> PolarsError {
    polars_err!(ComputeError: "a sum overflows Int64 milliliters")
}

/// Per customer of either frame, in customer order, the sums of `N` `Int64` columns: each
/// frame names the column it contributes to each sum (`""`: none, it adds 0). Returns the
/// `customer_id` column and the sums. A null customer or value is an error, not a zero.
pub(super) fn sum_by_customer<const N: usize>(
    frames: [(&DataFrame, &[&str; N]); 2],
) -> PolarsResult<(Column, [Vec<i64>; N])> {
    let mut sorted = Vec::with_capacity(2);
    for (frame, columns) in frames {
        sorted.push((sorted_by_customer(frame)?, columns));
    }
    let mut ids: Vec<Vec<&str>> = Vec::with_capacity(2);
    let mut values: Vec<Vec<Option<Vec<i64>>>> = Vec::with_capacity(2);
    for (frame, columns) in &sorted {
        let customers = frame.column(col::CUSTOMER_ID)?.str()?;
        if customers.null_count() > 0 {
            polars_bail!(ComputeError: "a customer_id is null");
        }
        ids.push(customers.iter().flatten().collect());
        let mut side = Vec::with_capacity(N);
        for &c in columns.iter() {
            side.push(if c.is_empty() {
                None
            } else {
                let values = frame.column(c)?.i64()?;
                if values.null_count() > 0 {
                    polars_bail!(ComputeError: "a {c} is null");
                }
                Some(values.into_no_null_iter().collect::<Vec<i64>>())
            });
        }
        values.push(side);
    }
    let capacity = ids[0].len().max(ids[1].len());
    let mut customers: Vec<&str> = Vec::with_capacity(capacity);
    let mut sums: [Vec<i64>; N] = std::array::from_fn(|_| Vec::with_capacity(capacity));
    let mut next = [0usize; 2];
    loop {
        let customer = match (ids[0].get(next[0]), ids[1].get(next[1])) {
            (None, None) => break,
            (Some(x), Some(y)) => *x.min(y),
            (Some(x), None) | (None, Some(x)) => *x,
        };
        let mut row = [0i64; N];
        for side in 0..2 {
            while ids[side].get(next[side]) == Some(&customer) {
                for (sum, column) in row.iter_mut().zip(&values[side]) {
                    if let Some(column) = column {
                        *sum = sum.checked_add(column[next[side]]).ok_or_else(overflow)?;
                    }
                }
                next[side] += 1;
            }
        }
        customers.push(customer);
        for (sum, out) in row.into_iter().zip(sums.iter_mut()) {
            out.push(sum);
        }
    }
    Ok((Column::new(col::CUSTOMER_ID.into(), customers), sums))
}

/// `rows` sorted by `customer_id` (borrowed when they already are).
fn sorted_by_customer(rows: &DataFrame) -> PolarsResult<std::borrow::Cow<'_, DataFrame>> {
    let customers = rows.column(col::CUSTOMER_ID)?.str()?;
    let mut previous: Option<&str> = None;
    for customer in customers.iter() {
        if customer < previous {
            return Ok(std::borrow::Cow::Owned(
                rows.sort([col::CUSTOMER_ID], SortMultipleOptions::default())?,
            ));
        }
        previous = customer;
    }
    Ok(std::borrow::Cow::Borrowed(rows))
}
