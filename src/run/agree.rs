//! Before a run or a rebuild writes anything: the checkpoint and the tables must agree. Every
//! table the run owns (the output tables and the dedup state) is opened with its pinned
//! parameters checked, and the last batch it holds (its last application transaction) is
//! compared with the checkpoint's. A table ahead of the checkpoint means the checkpoint is older
//! than the tables (restored from an older copy): planning the next batch would reuse ids the
//! tables already hold, every table would skip it as done, and its readings would be lost. A
//! table behind, or missing, means the tables are older than the checkpoint (restored, moved,
//! or an `output_root` mistyped): building on them would lose every batch in between. Either
//! way the run refuses, naming each table's batch, and nothing is written.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::state::Checkpoint;
use crate::table::{ALERT_TABLES, ALL, MONTHLY_BILLS, Pin, Spec, Table, block_on, pins};

/// The tables, opened and checked: `resuming` is the batch whose saved plan the run finishes
/// (its commits may already be in some tables), if any. Once every table agrees, and only if
/// `upgrade` (a run or a rebuild, not a check), tables of an earlier version are brought up to
/// this version's layout (the pinned parameters and the columns they lack). Returns the open tables, for the run to keep.
pub(crate) fn checked_tables(
    config: &Config,
    checkpoint: &Checkpoint,
    resuming: Option<i64>,
    upgrade: bool,
) -> Result<BTreeMap<&'static str, Table>> {
    checked_tables_pinned(config, checkpoint, resuming, upgrade, &pins(config))
}

/// [`checked_tables`], with the tables' pinned parameters checked against `pins` (none, for a
/// rebuild that replaces tables built with another time zone).
pub(crate) fn checked_tables_pinned(
    config: &Config,
    checkpoint: &Checkpoint,
    resuming: Option<i64>,
    upgrade: bool,
    pins: &[Pin],
) -> Result<BTreeMap<&'static str, Table>> {
    let last = (checkpoint.next_batch > 0).then(|| checkpoint.next_batch - 1);
    let newest_allowed = resuming.or(last);
    let mut tables = BTreeMap::new();
    let mut disagree = Vec::new();
    let opened = open_existing_at_once(config, &ALL, pins)?;
    // Each table's last batch, all at once too (reading it replays the table's log).
    let held = block_on(futures::future::join_all(opened.iter().map(
        |table| async move {
            match table {
                Some(table) => table.last_batch().await.map(Some),
                None => Ok(None),
            }
        },
    )))?
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    // The alert tables of a deployment of a version before alerts, whose run creates them:
    // each missing, holding no batch, or holding only the batch being resumed (that run was
    // interrupted between the two).
    let is_alert = |spec: &Spec| ALERT_TABLES.iter().any(|a| a.name == spec.name);
    let alerts_new = last.is_some()
        && ALL
            .iter()
            .zip(&held)
            .filter(|(spec, _)| is_alert(spec))
            .all(|(_, held)| match held {
                None | Some(None) => true,
                Some(Some(batch)) => resuming.is_some_and(|r| *batch >= r),
            });
    for ((spec, table), held) in ALL.into_iter().zip(opened).zip(held) {
        if alerts_new && is_alert(spec) {
            tables.extend(table.map(|t| (spec.name, t)));
            continue;
        }
        let (Some(table), Some(held)) = (table, held) else {
            // No table yet: right before the first batch (the run creates it), wrong after.
            if last.is_some() {
                disagree.push(format!("`{}` is missing ({})", spec.name, spec.dir(config)));
            }
            continue;
        };
        if let Some(problem) = judge(spec, held, last, newest_allowed) {
            disagree.push(format!("`{}` {problem}", spec.name));
        }
        tables.insert(spec.name, table);
    }
    if disagree.is_empty() {
        if upgrade {
            for table in tables.values_mut() {
                block_on(table.upgrade())??;
            }
        }
        return Ok(tables);
    }
    Err(Error::Disagree {
        checkpoint: config.checkpoint_dir.to_string(),
        last_batch: last.map_or_else(|| "none (a new checkpoint)".to_owned(), |b| b.to_string()),
        tables: disagree.join("; "),
    })
}

/// The tables of `specs` in `config`'s folders, in order, opened all at once (on object storage
/// each opening is a few round trips); `None` where a table does not exist (nothing is created).
pub(super) fn open_existing_at_once(
    config: &Config,
    specs: &[&'static Spec],
    pins: &[Pin],
) -> Result<Vec<Option<Table>>> {
    let opening = specs
        .iter()
        .map(|&spec| async move { Table::open_existing(&spec.dir(config), spec, pins).await });
    block_on(futures::future::join_all(opening))?
        .into_iter()
        .collect()
}

/// What is wrong with a table that holds batch `held` when the checkpoint's last batch is
/// `last` and a table may hold up to `newest_allowed`; `None` if it agrees.
fn judge(
    spec: &Spec,
    held: Option<i64>,
    last: Option<i64>,
    newest_allowed: Option<i64>,
) -> Option<String> {
    let name = |b: Option<i64>| b.map_or_else(|| "no batch".to_owned(), |b| format!("batch {b}"));
    if held > newest_allowed {
        return Some(format!("holds {}, after the checkpoint's", name(held)));
    }
    // `monthly_bills` commits only in the batches that close a month; every other table
    // commits in every batch.
    if spec.name == MONTHLY_BILLS.name || held >= last {
        return None;
    }
    Some(format!("holds {}, before the checkpoint's", name(held)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::HOURLY_USAGE;

    #[test]
    fn tables_agree_with_the_checkpoint_or_are_named() {
        let ok = |spec, held, last, allowed| judge(spec, held, last, allowed).is_none();
        // A new checkpoint and new tables; tables at the checkpoint's batch.
        assert!(ok(&HOURLY_USAGE, None, None, None));
        assert!(ok(&HOURLY_USAGE, Some(4), Some(4), Some(4)));
        // Resuming batch 5: a table may already hold it, or not yet.
        assert!(ok(&HOURLY_USAGE, Some(5), Some(4), Some(5)));
        assert!(ok(&HOURLY_USAGE, Some(4), Some(4), Some(5)));
        // A checkpoint restored from an older copy: the tables are ahead.
        let ahead = judge(&HOURLY_USAGE, Some(9), Some(4), Some(4));
        assert_eq!(
            ahead.as_deref(),
            Some("holds batch 9, after the checkpoint's")
        );
        assert!(
            !ok(&HOURLY_USAGE, Some(0), None, None),
            "a new checkpoint, old tables"
        );
        // Tables older than the checkpoint.
        let behind = judge(&HOURLY_USAGE, Some(2), Some(4), Some(4));
        assert_eq!(
            behind.as_deref(),
            Some("holds batch 2, before the checkpoint's")
        );
        assert!(!ok(&HOURLY_USAGE, None, Some(4), Some(4)));
        // Bills commit only when a month closes: behind is normal, ahead is not.
        assert!(ok(&MONTHLY_BILLS, None, Some(4), Some(4)));
        assert!(ok(&MONTHLY_BILLS, Some(1), Some(4), Some(4)));
        assert!(!ok(&MONTHLY_BILLS, Some(6), Some(4), Some(4)));
    }
}
