//! How an hour partition is split into files, and which of them a run rewrites.
//!
//! Late data is not spread evenly over customers: after the first hour or two, what changes an
//! hour is a replay from a meter that went quiet (an outage), and those meters are known before
//! their data arrives. So each hour partition of `hourly_usage` and `cumulative_usage` has a
//! *main* file and a small *side* file: the side file holds the customers with a quiet meter
//! or one just back from being quiet (its replay may straddle two runs), and customers new to
//! the billing month. A replay then rewrites the side files of the hours it reaches, not every
//! whole hour, and an hour is made one file again when it becomes final.
//!
//! The two tables must agree on who is kept apart, or a customer's hourly row could be written
//! into the side file while an older copy stays in the main one. `cumulative_usage` is dense
//! (every customer of the month has a row in every hour), so its side files name exactly the
//! customers kept apart in an hour: the hour's *side set*. The rule both tables keep, for every
//! hour that is not final: **`hourly_usage`'s main file holds no customer of the side set and no
//! customer new to the month.** Then an `hourly_usage` change whose customers are all in the side
//! set or new to the month can rewrite the side files alone; any other change rewrites the whole
//! hour of both tables, split afresh by who is kept apart now.

use crate::hashing::FastSet;

/// What a run rewrites of one hour partition of `hourly_usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hourly {
    /// Every file: main and side are written again, split by who is kept apart now.
    Whole,
    /// The side files only.
    Side,
}

/// What a run rewrites of one hour partition of `cumulative_usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cumulative {
    /// The hour becomes final: every file, written again as one.
    Final,
    /// Every file, split afresh: the side file takes the quiet customers (and `hourly_usage`
    /// is split the same way in the same run).
    Resplit,
    /// Every file, keeping the side set (plus customers new to the month): `hourly_usage`'s
    /// main file of the hour stays as it is.
    Keep,
    /// The side files only.
    Side,
}

/// Whether a change can stay in the side files: every changed customer is in the side set or
/// new to the month.
fn fits_side<'a>(
    side_set: &FastSet<String>,
    changed: impl IntoIterator<Item = &'a str>,
    in_month: impl Fn(&str) -> bool,
) -> bool {
    changed
        .into_iter()
        .all(|c| side_set.contains(c) || !in_month(c))
}

/// The `hourly_usage` rewrite of an hour whose customers `changed` got new readings.
/// `side_set` is the hour's side set (`None` when `cumulative_usage` has no such hour yet: a new
/// hour is written whole); `in_month` says whether a customer has rows in the hour's month.
pub fn hourly<'a>(
    side_set: Option<&FastSet<String>>,
    changed: impl IntoIterator<Item = &'a str>,
    in_month: impl Fn(&str) -> bool,
) -> Hourly {
    match side_set {
        Some(side) if fits_side(side, changed, in_month) => Hourly::Side,
        _ => Hourly::Whole,
    }
}

/// The `cumulative_usage` rewrite of an hour whose rows of customers `changed` change (new
/// usage in the hour or before it in the month, or new to the month). `hourly` is what the same
/// run rewrites of that hour of `hourly_usage` (`None`: nothing), `side_set` as for [`hourly`].
pub fn cumulative<'a>(
    is_final: bool,
    hourly: Option<Hourly>,
    side_set: Option<&FastSet<String>>,
    changed: impl IntoIterator<Item = &'a str>,
    in_month: impl Fn(&str) -> bool,
) -> Cumulative {
    if is_final {
        return Cumulative::Final;
    }
    match (hourly, side_set) {
        (Some(Hourly::Whole), _) | (_, None) => Cumulative::Resplit,
        (_, Some(side)) if fits_side(side, changed, in_month) => Cumulative::Side,
        (_, Some(_)) => Cumulative::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> FastSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn replays_of_customers_kept_apart_stay_in_the_side_files() {
        let side = set(&["quiet"]);
        let month = set(&["quiet", "steady"]);
        let in_month = |c: &str| month.contains(c);
        // A replay of the quiet customer, and a customer the month has not seen.
        let replay = ["quiet", "new"];
        assert_eq!(hourly(Some(&side), replay, in_month), Hourly::Side);
        assert_eq!(
            cumulative(false, Some(Hourly::Side), Some(&side), replay, in_month),
            Cumulative::Side
        );
        // A late reading of a steady customer: its row is in the main files.
        let late = ["quiet", "steady"];
        assert_eq!(hourly(Some(&side), late, in_month), Hourly::Whole);
        assert_eq!(
            cumulative(false, Some(Hourly::Whole), Some(&side), late, in_month),
            Cumulative::Resplit
        );
        // A new hour is written whole.
        assert_eq!(hourly(None, ["quiet"], in_month), Hourly::Whole);
        assert_eq!(
            cumulative(false, None, None, ["quiet"], in_month),
            Cumulative::Resplit
        );
    }

    #[test]
    fn running_totals_of_steady_customers_keep_the_split() {
        // The steady customer's usage changed in an earlier hour: its later rows change in
        // `cumulative_usage` only, whose whole hour is rewritten keeping the side set, since
        // `hourly_usage`'s main file of the hour stays.
        let side = set(&["quiet"]);
        let month = set(&["quiet", "steady"]);
        let in_month = |c: &str| month.contains(c);
        assert_eq!(
            cumulative(false, None, Some(&side), ["steady"], in_month),
            Cumulative::Keep
        );
        assert_eq!(
            cumulative(
                false,
                Some(Hourly::Side),
                Some(&side),
                ["steady", "quiet"],
                in_month
            ),
            Cumulative::Keep
        );
        // Whatever the change, an hour the watermark passes becomes one final file.
        assert_eq!(
            cumulative(true, Some(Hourly::Side), Some(&side), ["quiet"], in_month),
            Cumulative::Final
        );
    }
}
