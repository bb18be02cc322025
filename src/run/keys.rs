//! Keys: the integers standing for meter and customer ids in the dedup state, so that dedup joins
//! and stores integers, not strings. A key never changes: ids new to a batch get the next keys
//! (in order of first appearance), appended to `dedup_keys` before the dedup state that uses
//! them is committed, so a rerun after a crash finds them there.

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::hashing::FastMap;
use crate::input::Parsed;
use crate::table::{DEDUP_KEYS, Table, Values, block_on, col, long_column};

/// What a key stands for, as stored in `dedup_keys`.
const METER_KIND: &str = "meter";
const CUSTOMER_KIND: &str = "customer";

/// The batch's ids as keys.
pub(super) struct BatchKeys {
    /// The batch's customers: `customer` (key) and `customer_id`, to name them in the tables.
    pub names: DataFrame,
    /// The `dedup_keys` rows of ids new in this batch.
    pub new_keys: DataFrame,
    /// Every customer key known after the batch, with its `customer_id`.
    pub customer_ids: FastMap<i64, String>,
    /// The `dedup_keys` rows stored before the batch (with `new_keys`, every key known).
    pub stored: DataFrame,
    /// The key of each of the batch's meter indexes.
    pub meter_keys: Vec<i64>,
    /// The key of each of the batch's customer indexes.
    pub customer_keys: Vec<i64>,
}

/// Replaces the batch indexes in `parsed.records`' `meter` and `customer` columns by keys,
/// assigning keys to ids `dedup_keys` does not have yet.
pub(super) fn assign(table: &Table, parsed: &mut Parsed) -> Result<BatchKeys> {
    let err = Error::polars("keys");
    let stored = block_on(table.read_hours(&Default::default()))??;
    let (kinds, ids, keys) = (
        stored.column(col::KIND).and_then(|c| c.str().cloned()),
        stored.column(col::ID).and_then(|c| c.str().cloned()),
        stored.column(col::KEY).and_then(|c| c.i64().cloned()),
    );
    let (kinds, ids, keys) = (kinds.map_err(err)?, ids.map_err(err)?, keys.map_err(err)?);
    let mut known: [FastMap<&str, i64>; 2] = Default::default();
    known[0].reserve(stored.height());
    let mut next = 0i64;
    for ((kind, id), key) in kinds
        .iter()
        .flatten()
        .zip(ids.iter().flatten())
        .zip(keys.into_no_null_iter())
    {
        let side = usize::from(kind == CUSTOMER_KIND);
        known[side].insert(id, key);
        next = next.max(key + 1);
    }
    let mut new = (Vec::new(), Vec::new(), Vec::new());
    let mut of = |side: usize, list: &[String]| -> Vec<i64> {
        list.iter()
            .map(|id| match known[side].get(id.as_str()) {
                Some(&key) => key,
                None => {
                    let key = next;
                    next += 1;
                    new.0.push([METER_KIND, CUSTOMER_KIND][side].into());
                    new.1.push(id.clone().into());
                    new.2.push(key);
                    key
                }
            })
            .collect()
    };
    let meter_keys = of(0, &parsed.meters);
    let customer_keys = of(1, &parsed.customers);
    let remap = |name: &str, keys: &[i64]| -> Result<Column> {
        let column = parsed.records.column(name).and_then(|c| c.i64().cloned());
        let mapped: Vec<i64> = column
            .map_err(err)?
            .into_no_null_iter()
            .map(|i| keys[i as usize])
            .collect();
        Ok(long_column(name, mapped))
    };
    let (meters, customers) = (
        remap(col::METER, &meter_keys)?,
        remap(col::CUSTOMER, &customer_keys)?,
    );
    parsed
        .records
        .with_column(meters)
        .and_then(|r| r.with_column(customers))
        .map_err(err)?;
    let names = DataFrame::new(
        customer_keys.len(),
        vec![
            long_column(col::CUSTOMER, customer_keys.clone()),
            Column::new(col::CUSTOMER_ID.into(), parsed.customers.clone()),
        ],
    )
    .map_err(err)?;
    let customer_ids = ids_by_key(&known[1], &customer_keys, &parsed.customers);
    let new_keys = DEDUP_KEYS.frame(vec![
        Values::Str(new.0),
        Values::Str(new.1),
        Values::Long(new.2),
    ])?;
    Ok(BatchKeys {
        names,
        new_keys,
        customer_ids,
        stored,
        meter_keys,
        customer_keys,
    })
}

/// Every id known after the batch by its key: the stored ones (`known`, id to key) and the
/// batch's `ids` with their `keys`.
fn ids_by_key(known: &FastMap<&str, i64>, keys: &[i64], ids: &[String]) -> FastMap<i64, String> {
    let mut by_key: FastMap<i64, String> = known
        .iter()
        .map(|(&id, &key)| (key, id.to_owned()))
        .collect();
    by_key.extend(keys.iter().copied().zip(ids.iter().cloned()));
    by_key
}

/// The meters of `dedup_keys` rows (`rows`: the stored ones and a batch's new ones) that
/// `wanted` selects by id and key: what a step that names a few meters looks up, without a map
/// of every id.
pub(super) fn meters_where(
    rows: &[&DataFrame],
    mut wanted: impl FnMut(&str, i64) -> bool,
) -> Result<Vec<(String, i64)>> {
    let err = Error::polars("keys");
    let mut out = Vec::new();
    for frame in rows {
        let (kinds, ids, keys) = (
            frame.column(col::KIND).and_then(|c| c.str()).map_err(err)?,
            frame.column(col::ID).and_then(|c| c.str()).map_err(err)?,
            frame.column(col::KEY).and_then(|c| c.i64()).map_err(err)?,
        );
        for ((kind, id), key) in kinds.iter().zip(ids.iter()).zip(keys.iter()) {
            if let (Some(METER_KIND), Some(id), Some(key)) = (kind, id, key)
                && wanted(id, key)
            {
                out.push((id.to_owned(), key));
            }
        }
    }
    Ok(out)
}
