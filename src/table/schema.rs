//! The tables' fixed schemas: the one definition of every table's columns, their types, the
//! partition column and where the table lives. Column names come from [`col`]; frames for a
//! table are built with [`Spec::frame`], which checks them against the schema.

use deltalake::TableProperty;
use polars::prelude::{Column, DataFrame, Int64Chunked, IntoColumn, NamedFrom, Series};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::Location;

/// Application id of every transaction the pipeline commits.
pub const APP_ID: &str = "aquabill";

/// Commits between Delta log checkpoints (written by each table's commit hook; about one commit
/// per hourly run). Opening a table replays the commits since its last log checkpoint, and a
/// commit of `cumulative_usage` can replace every hour of a month: a day of them (the interval
/// was 24) made opening a table and reading its state back after each commit grow with the
/// month. A checkpoint every few commits keeps both flat.
pub const CHECKPOINT_INTERVAL: &str = "10";

/// How long a table's Delta log keeps commits older than its latest log checkpoint (they are
/// removed when a checkpoint is written): as long as vacuum keeps replaced data files (the
/// watermark's 168 hours, [`crate::hours::WATERMARK_HOURS`]), the furthest a reader can travel
/// back anyway. Delta's default, 30 days, makes every table open list a month of commits.
pub const LOG_RETENTION: &str = "interval 168 hours";

/// The Delta table properties of every table this version writes, with the value an earlier
/// version set (if it set one): set when a table is created, and by the upgrade of a table of an
/// earlier version that lacks one or holds the earlier version's value (layout only: no stored
/// row changes meaning); a value an operator chose is left alone. Log checkpoints also carry
/// each file's statistics as a struct, so that opening a table does not parse them from JSON.
pub const PROPERTIES: [(TableProperty, &str, Option<&str>); 3] = [
    (
        TableProperty::CheckpointInterval,
        CHECKPOINT_INTERVAL,
        Some("24"),
    ),
    (TableProperty::LogRetentionDuration, LOG_RETENTION, None),
    (TableProperty::CheckpointWriteStatsAsStruct, "true", None),
];

/// A parameter that gives a table's stored rows their meaning, stored with the table as the
/// Delta table property `aquabill.<parameter>` and checked whenever a run opens the table, so
/// that it survives a restored checkpoint and no run mixes two values in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The notebook parameter's name.
    pub parameter: &'static str,
    /// Its value, as the tables store it.
    pub value: String,
}

impl Pin {
    /// The table property that stores it.
    pub fn property(&self) -> String {
        Self::property_of(self.parameter)
    }

    /// The table property that stores parameter `parameter`.
    pub fn property_of(parameter: &str) -> String {
        format!("{APP_ID}.{parameter}")
    }
}

/// The parameters the tables of `config` are pinned to: the billing time zone, which decides
/// the month every running total and bill belongs to. (`clock_skew_minutes` decides only what a
/// batch accepts: each batch's plan records it.)
pub fn pins(config: &Config) -> Vec<Pin> {
    vec![Pin {
        parameter: "billing_timezone",
        value: config.billing_timezone.name().to_owned(),
    }]
}

/// An `Int64` column holding `values` as its buffer (`Column::new` would copy them).
pub fn long_column(name: &str, values: Vec<i64>) -> Column {
    Int64Chunked::from_vec(name.into(), values).into_column()
}

/// Column names, shared by the tables and the frames the queries build.
pub mod col {
    /// Customer account.
    pub const CUSTOMER_ID: &str = "customer_id";
    /// UTC hour the readings were recorded in (hour index in memory, `YYYY-MM-DDTHH` stored).
    pub const USAGE_HOUR: &str = "usage_hour";
    /// Milliliters.
    pub const USAGE_ML: &str = "usage_ml";
    /// Readings counted.
    pub const READING_COUNT: &str = "reading_count";
    /// Distinct meters that reported.
    pub const METER_COUNT: &str = "meter_count";
    /// `YYYY-MM` in the billing time zone.
    pub const BILLING_MONTH: &str = "billing_month";
    /// Running total over the billing month, ml.
    pub const CUMULATIVE_ML: &str = "cumulative_ml";
    /// No record can change the row any more.
    pub const IS_FINAL: &str = "is_final";
    /// End of the reading's interval, µs since the epoch (UTC).
    pub const RECORDED_AT: &str = "recorded_at";
    /// The batch (run) that wrote a row.
    pub const BATCH_ID: &str = "batch_id";
    /// A meter's key: a compact integer standing for its `meter_id` (see `DEDUP_KEYS`).
    pub const METER: &str = "meter";
    /// A customer's key, standing for its `customer_id`.
    pub const CUSTOMER: &str = "customer";
    /// What a key stands for: `meter` or `customer`.
    pub const KIND: &str = "kind";
    /// The id a key stands for.
    pub const ID: &str = "id";
    /// A key.
    pub const KEY: &str = "key";
    /// `recorded_at` of a meter's latest accepted reading, µs.
    pub const LAST_SEEN: &str = "last_seen";
    /// Index of the first 64-hour word of a bitmap of hours (hour `64 * first_word`).
    pub const FIRST_WORD: &str = "first_word";
    /// The words of a bitmap of hours, bit `i` of word `w` standing for hour
    /// `64 * (first_word + w) + i`.
    pub const HOUR_WORDS: [&str; 4] = ["hours_0", "hours_1", "hours_2", "hours_3"];
    /// A customer's bill for a month, ml.
    pub const TOTAL_ML: &str = "total_ml";
    /// The same bill in cubic meters (exact: a decimal with 6 places).
    pub const TOTAL_M3: &str = "total_m3";
    /// The billing month's last hour (UTC): the `cumulative_usage` hour a bill is the total of.
    pub const LAST_HOUR: &str = "last_hour";
    /// The batch whose watermark passed the month's end and wrote its bills.
    pub const CLOSED_BY_BATCH: &str = "closed_by_batch";
    /// Hours of the month with at least one reading of the customer.
    pub const HOURS_WITH_READINGS: &str = "hours_with_readings";
    /// Hours from the customer's first reading of the month to the month's end.
    pub const HOURS_SINCE_FIRST_READING: &str = "hours_since_first_reading";
    /// The most of the customer's meters that reported in one hour of the month.
    pub const METERS_REPORTED: &str = "meters_reported";
    /// The library that computed a row: its version and the digest of its sources
    /// (`aquabill 0.1.0 source <digest>`, see [`crate::provenance`]).
    pub const COMPUTED_BY: &str = "computed_by";
    /// The parameters that decided a row's values, as a JSON object.
    pub const PARAMETERS: &str = "parameters";
    /// Meter id, as the log names it.
    pub const METER_ID: &str = "meter_id";
    /// An episode's first hour.
    pub const FIRST_HOUR: &str = "first_hour";
    /// No hour has ended the episode yet.
    pub const IS_OPEN: &str = "is_open";
    /// Hours an episode counted.
    pub const HOURS: &str = "hours";
    /// The hours of the threshold an episode was judged with.
    pub const THRESHOLD_HOURS: &str = "threshold_hours";
    /// The batch that first recorded an episode.
    pub const OPENED_BY_BATCH: &str = "opened_by_batch";
    /// A meter's alert history, packed (`run::history`).
    pub const HISTORY: &str = "history";
}

/// How a column is typed in Delta and in Polars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Delta `string`, Polars `String`.
    Str,
    /// Delta `long`, Polars `Int64`.
    Long,
    /// Delta `boolean`, Polars `Boolean`.
    Bool,
    /// Delta `string` `YYYY-MM-DDTHH` (UTC), Polars `Int64` hour index.
    Hour,
    /// Delta `timestamp` (UTC, µs), Polars `Int64` µs since the epoch.
    Timestamp,
    /// Delta `decimal(19,6)` in cubic meters, Polars `Int64` milliliters: the decimal's unscaled
    /// value, so the two are the same integer and any `i64` fits.
    CubicMeters,
    /// Delta `binary`, Polars `Binary`: a value the pipeline packs itself (a state table's).
    Binary,
}

/// Precision and scale of [`Kind::CubicMeters`]: 19 digits hold every `i64` of milliliters.
pub const CUBIC_METERS_DECIMAL: (u8, u8) = (19, 6);

/// Which folder a table lives under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// `<output_root>/<name>`: a table readers use.
    Output,
    /// `<checkpoint>/<name>`: the pipeline's own state.
    Checkpoint,
}

/// The fixed layout of one table.
#[derive(Debug)]
pub struct Spec {
    /// Folder name under its home.
    pub name: &'static str,
    /// Columns in order; none is nullable but the last [`Spec::added`].
    pub columns: &'static [(&'static str, Kind)],
    /// How many of the last columns a later version added: nullable in the Delta schema, with
    /// no value in rows written before them. A table without them gets them (one schema
    /// commit) when a run opens it, after every table agreed (see [`super::Table::upgrade`]).
    pub added: usize,
    /// Partition column (of kind [`Kind::Hour`]), if any.
    pub partition: Option<&'static str>,
    /// Rows per parquet row group, where readers skip row groups by their statistics.
    pub row_group_rows: Option<usize>,
    /// The column each data file is sorted by (stable: rows of one value keep their order),
    /// so that row groups cover narrow ranges of it.
    pub sorted_by: Option<&'static str>,
    /// Where it lives.
    pub home: Home,
    /// The table holding this hour-partitioned table's final days as one file per UTC day,
    /// ordered by customer: what a customer's month reads instead of every hour file
    /// (`table::days`).
    pub days: Option<&'static Spec>,
}

/// `hourly_usage`: usage per customer and recording hour.
pub const HOURLY_USAGE: Spec = Spec {
    name: "hourly_usage",
    columns: HOURLY_USAGE_COLUMNS,
    partition: Some(col::USAGE_HOUR),
    added: 0,
    // Rows by customer in row groups: a query for a few customers (a customer's month, a
    // complaint) decodes one row group of each hour file, not the file.
    row_group_rows: Some(CUSTOMER_ROW_GROUP),
    sorted_by: Some(col::CUSTOMER_ID),
    home: Home::Output,
    days: Some(&HOURLY_USAGE_DAYS),
};

/// Rows per row group of the tables sorted by customer.
const CUSTOMER_ROW_GROUP: usize = 4096;

/// `cumulative_usage`: dense running total per customer over the billing month.
pub const CUMULATIVE_USAGE: Spec = Spec {
    name: "cumulative_usage",
    columns: CUMULATIVE_USAGE_COLUMNS,
    partition: Some(col::USAGE_HOUR),
    added: 0,
    // Rows by customer in row groups: a query for a few customers (a customer's month, a
    // complaint) decodes one row group of each hour file, not the file.
    row_group_rows: Some(CUSTOMER_ROW_GROUP),
    sorted_by: Some(col::CUSTOMER_ID),
    home: Home::Output,
    days: Some(&CUMULATIVE_USAGE_DAYS),
};

const HOURLY_USAGE_COLUMNS: &[(&str, Kind)] = &[
    (col::CUSTOMER_ID, Kind::Str),
    (col::USAGE_HOUR, Kind::Hour),
    (col::USAGE_ML, Kind::Long),
    (col::READING_COUNT, Kind::Long),
    (col::METER_COUNT, Kind::Long),
];

const CUMULATIVE_USAGE_COLUMNS: &[(&str, Kind)] = &[
    (col::CUSTOMER_ID, Kind::Str),
    (col::USAGE_HOUR, Kind::Hour),
    (col::BILLING_MONTH, Kind::Str),
    (col::USAGE_ML, Kind::Long),
    (col::CUMULATIVE_ML, Kind::Long),
    (col::IS_FINAL, Kind::Bool),
];

/// `hourly_usage_days`: the final days of `hourly_usage`, one file per UTC day ordered by
/// customer and hour, each tagged with the `hourly_usage` files it copies (`table::days`).
/// The pipeline's own index for the views: a reader wants `hourly_usage`.
pub const HOURLY_USAGE_DAYS: Spec = day_spec("hourly_usage_days", HOURLY_USAGE_COLUMNS);

/// `cumulative_usage_days`: the final days of `cumulative_usage`, as [`HOURLY_USAGE_DAYS`].
pub const CUMULATIVE_USAGE_DAYS: Spec = day_spec("cumulative_usage_days", CUMULATIVE_USAGE_COLUMNS);

/// The day table of a customer table with `columns`: unpartitioned (a file holds a day's 24
/// hours), rows by customer in row groups, beside the dedup state.
const fn day_spec(name: &'static str, columns: &'static [(&'static str, Kind)]) -> Spec {
    Spec {
        name,
        columns,
        partition: None,
        added: 0,
        row_group_rows: Some(CUSTOMER_ROW_GROUP),
        sorted_by: Some(col::CUSTOMER_ID),
        home: Home::Checkpoint,
        days: None,
    }
}

/// `monthly_bills`: one row per customer and closed billing month, written once by the run whose
/// watermark passes the month's end (later records for the month are late, so nothing changes
/// it after), with how complete the month's readings are.
pub const MONTHLY_BILLS: Spec = Spec {
    name: "monthly_bills",
    columns: &[
        (col::CUSTOMER_ID, Kind::Str),
        (col::BILLING_MONTH, Kind::Str),
        (col::TOTAL_ML, Kind::Long),
        (col::TOTAL_M3, Kind::CubicMeters),
        (col::LAST_HOUR, Kind::Hour),
        (col::CLOSED_BY_BATCH, Kind::Long),
        (col::HOURS_WITH_READINGS, Kind::Long),
        (col::HOURS_SINCE_FIRST_READING, Kind::Long),
        (col::METERS_REPORTED, Kind::Long),
        (col::COMPUTED_BY, Kind::Str),
        (col::PARAMETERS, Kind::Str),
    ],
    partition: None,
    added: 2,
    row_group_rows: None,
    sorted_by: None,
    home: Home::Output,
    days: None,
};

/// `quarantine`: every line or record kept out of the totals, with its reason.
pub const QUARANTINE: Spec = Spec {
    name: "quarantine",
    columns: &[
        (col::BATCH_ID, Kind::Long),
        ("source_file", Kind::Str),
        ("line_number", Kind::Long),
        ("reason", Kind::Str),
        ("detail", Kind::Str),
        ("raw_line", Kind::Str),
    ],
    partition: None,
    added: 0,
    // Rows arrive in ingestion order: row groups of a narrow `source_file` range let a query
    // of the latest hours skip the rest.
    row_group_rows: Some(16_384),
    sorted_by: None,
    home: Home::Output,
    days: None,
};

/// `run_metrics`: one row per run.
pub const RUN_METRICS: Spec = Spec {
    name: "run_metrics",
    columns: &[
        (col::BATCH_ID, Kind::Long),
        ("started_at", Kind::Timestamp),
        ("files", Kind::Long),
        ("lines_read", Kind::Long),
        ("accepted", Kind::Long),
        ("duplicates", Kind::Long),
        ("conflicts", Kind::Long),
        ("late", Kind::Long),
        ("future", Kind::Long),
        ("malformed", Kind::Long),
        ("hours_touched", Kind::Long),
        ("state_rows_read", Kind::Long),
        ("watermark_hour", Kind::Str),
        ("duration_ms", Kind::Long),
        ("plan_ms", Kind::Long),
        ("parse_ms", Kind::Long),
        ("dedup_ms", Kind::Long),
        ("hourly_usage_ms", Kind::Long),
        ("cumulative_usage_ms", Kind::Long),
        ("finish_ms", Kind::Long),
        ("hourly_usage_version", Kind::Long),
        ("hourly_usage_files", Kind::Long),
        ("cumulative_usage_version", Kind::Long),
        ("cumulative_usage_files", Kind::Long),
        ("held_back_files", Kind::Long),
    ],
    partition: None,
    added: 1,
    row_group_rows: None,
    sorted_by: None,
    home: Home::Output,
    days: None,
};

/// The dedup state: readings accepted within the watermark, by recording hour, with meters and
/// customers as keys (`DEDUP_KEYS`).
pub const DEDUP_STATE: Spec = Spec {
    name: "dedup_readings",
    columns: &[
        (col::METER, Kind::Long),
        (col::RECORDED_AT, Kind::Long),
        (col::CUSTOMER, Kind::Long),
        (col::USAGE_ML, Kind::Long),
        (col::USAGE_HOUR, Kind::Hour),
    ],
    partition: Some(col::USAGE_HOUR),
    added: 0,
    // Files are sorted by meter: a run reading a few meters' readings decodes a few row groups.
    row_group_rows: Some(4096),
    sorted_by: Some(col::METER),
    home: Home::Checkpoint,
    days: None,
};

/// The keys of the dedup state: every meter and customer id seen, with the integer that stands
/// for it there. Only ever appended to (a key never changes).
pub const DEDUP_KEYS: Spec = Spec {
    name: "dedup_keys",
    columns: &[
        (col::KIND, Kind::Str),
        (col::ID, Kind::Str),
        (col::KEY, Kind::Long),
    ],
    partition: None,
    added: 0,
    row_group_rows: None,
    sorted_by: None,
    home: Home::Checkpoint,
    days: None,
};

/// What the dedup state knows of each meter and customer it reported for: its latest reading
/// and the hours (within the watermark) it has readings in, as a bitmap. Small (a row per
/// meter), read whole and rewritten by every run.
pub const DEDUP_METERS: Spec = Spec {
    name: "dedup_meters",
    columns: &[
        (col::METER, Kind::Long),
        (col::CUSTOMER, Kind::Long),
        (col::LAST_SEEN, Kind::Long),
        (col::FIRST_WORD, Kind::Long),
        (col::HOUR_WORDS[0], Kind::Long),
        (col::HOUR_WORDS[1], Kind::Long),
        (col::HOUR_WORDS[2], Kind::Long),
        (col::HOUR_WORDS[3], Kind::Long),
    ],
    partition: None,
    added: 0,
    row_group_rows: None,
    sorted_by: None,
    home: Home::Checkpoint,
    days: None,
};

/// `meter_alerts`: one row per meter and episode of continuous flow, silence or a bill at risk (see
/// `query::alerts`), rewritten whole by every run: small (episodes are rare), and an episode's
/// row changes while it is open. `closed_by_batch` is empty while the episode is open (the one
/// nullable column of a table's first layout).
pub const METER_ALERTS: Spec = Spec {
    name: "meter_alerts",
    columns: &[
        (col::METER_ID, Kind::Str),
        (col::CUSTOMER_ID, Kind::Str),
        (col::KIND, Kind::Str),
        (col::FIRST_HOUR, Kind::Hour),
        (col::LAST_HOUR, Kind::Hour),
        (col::IS_OPEN, Kind::Bool),
        (col::HOURS, Kind::Long),
        (col::USAGE_ML, Kind::Long),
        (col::THRESHOLD_HOURS, Kind::Long),
        (col::OPENED_BY_BATCH, Kind::Long),
        (col::CLOSED_BY_BATCH, Kind::Long),
    ],
    partition: None,
    added: 1,
    row_group_rows: None,
    sorted_by: None,
    home: Home::Output,
    days: None,
};

/// What the alerts know of each meter between runs (`query::alerts`): one row per meter, meters
/// and customers as keys (`DEDUP_KEYS`), the meter's hearing, flow and dry runs and open billing
/// months packed into one binary value (`run::history` documents the format). Read whole and
/// rewritten by every run.
pub const ALERT_METERS: Spec = Spec {
    name: "alert_meters",
    columns: &[
        (col::METER, Kind::Long),
        (col::CUSTOMER, Kind::Long),
        (col::HISTORY, Kind::Binary),
    ],
    partition: None,
    added: 0,
    row_group_rows: None,
    sorted_by: None,
    home: Home::Checkpoint,
    days: None,
};

/// The alert tables: a deployment of an earlier version has neither, and its first run of
/// this one creates both (alerts judged from that batch on; a rebuild judges the whole log).
pub const ALERT_TABLES: [&Spec; 2] = [&METER_ALERTS, &ALERT_METERS];

/// The day tables (what views read instead of the final hours of the customer tables).
pub const DAY_TABLES: [&Spec; 2] = [&HOURLY_USAGE_DAYS, &CUMULATIVE_USAGE_DAYS];

/// Every table the pipeline writes, in commit order (but the day tables: derived from these,
/// checked against them when read, written after the checkpoint).
pub const ALL: [&Spec; 10] = [
    &HOURLY_USAGE,
    &CUMULATIVE_USAGE,
    &MONTHLY_BILLS,
    &METER_ALERTS,
    &ALERT_METERS,
    &QUARANTINE,
    &RUN_METRICS,
    &DEDUP_KEYS,
    &DEDUP_METERS,
    &DEDUP_STATE,
];

/// The tables readers use (those under `output_root`), in commit order.
pub fn output_tables() -> impl Iterator<Item = &'static Spec> {
    ALL.into_iter().filter(|spec| spec.home == Home::Output)
}

/// The values of one column of a frame being built for a table.
#[derive(Debug)]
pub enum Values<'a> {
    /// For [`Kind::Str`] columns.
    Str(Vec<std::borrow::Cow<'a, str>>),
    /// For [`Kind::Long`], [`Kind::Hour`], [`Kind::Timestamp`] and [`Kind::CubicMeters`] columns.
    Long(Vec<i64>),
    /// For [`Kind::Bool`] columns.
    Bool(Vec<bool>),
    /// For [`Kind::Binary`] columns.
    Bytes(Vec<Vec<u8>>),
    /// A column built already (its name and type are checked against the schema).
    Built(Column),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Values::Str(v) => v.len(),
            Values::Long(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Bytes(v) => v.len(),
            Values::Built(c) => c.len(),
        }
    }

    fn fits(&self, name: &str, kind: Kind, nullable: bool) -> bool {
        use polars::prelude::DataType;
        match (self, kind) {
            (Values::Str(_), Kind::Str)
            | (Values::Long(_), Kind::Long | Kind::Hour | Kind::Timestamp | Kind::CubicMeters)
            | (Values::Bool(_), Kind::Bool)
            | (Values::Bytes(_), Kind::Binary) => true,
            (Values::Built(c), kind) => {
                c.name().as_str() == name
                    && (nullable || c.null_count() == 0)
                    && *c.dtype()
                        == match kind {
                            Kind::Str => DataType::String,
                            Kind::Bool => DataType::Boolean,
                            Kind::Binary => DataType::Binary,
                            Kind::Long | Kind::Hour | Kind::Timestamp | Kind::CubicMeters => {
                                DataType::Int64
                            }
                        }
            }
            _ => false,
        }
    }
}

impl Spec {
    /// The folder of this table for a run with `config`.
    pub fn dir(&self, config: &Config) -> Location {
        match self.home {
            Home::Output => config.output_root.join(self.name),
            Home::Checkpoint => config.checkpoint_dir.join(self.name),
        }
    }

    /// The kind of column `name`.
    pub fn kind(&self, name: &str) -> Option<Kind> {
        self.columns.iter().find(|c| c.0 == name).map(|c| c.1)
    }

    /// Whether column `name` is one a later version added (nullable).
    pub fn is_added(&self, name: &str) -> bool {
        self.added_columns().iter().any(|c| c.0 == name)
    }

    /// The columns a later version added, in order.
    pub fn added_columns(&self) -> &'static [(&'static str, Kind)] {
        &self.columns[self.columns.len() - self.added..]
    }

    /// The columns of the first layout, which every table of this name has.
    pub fn first_columns(&self) -> &'static [(&'static str, Kind)] {
        &self.columns[..self.columns.len() - self.added]
    }

    /// A frame of this table's rows from one [`Values`] per column, in the schema's order; the
    /// names and types come from the schema.
    pub fn frame(&self, values: Vec<Values<'_>>) -> Result<DataFrame> {
        let height = values.first().map_or(0, Values::len);
        if values.len() != self.columns.len() {
            return Err(Error::table_data(
                self.name,
                "*",
                format!(
                    "{} columns given, {} expected",
                    values.len(),
                    self.columns.len()
                ),
            ));
        }
        let mut columns = Vec::with_capacity(values.len());
        for (&(name, kind), v) in self.columns.iter().zip(values) {
            if !v.fits(name, kind, self.is_added(name)) || v.len() != height {
                return Err(Error::table_data(
                    self.name,
                    name,
                    format!("{} values of {v:?}, expected {height} of {kind:?}", v.len())
                        .chars()
                        .take(200)
                        .collect::<String>(),
                ));
            }
            columns.push(match v {
                Values::Str(v) => Series::new(name.into(), v).into_column(),
                Values::Long(v) => long_column(name, v),
                Values::Bool(v) => Column::new(name.into(), v),
                Values::Bytes(v) => Series::new(name.into(), v).into_column(),
                Values::Built(c) => c,
            });
        }
        DataFrame::new(height, columns).map_err(Error::polars("building table rows"))
    }

    /// No rows, with this table's columns.
    pub fn empty_frame(&self) -> Result<DataFrame> {
        let values = self
            .columns
            .iter()
            .map(|&(_, kind)| match kind {
                Kind::Str => Values::Str(Vec::new()),
                Kind::Bool => Values::Bool(Vec::new()),
                Kind::Binary => Values::Bytes(Vec::new()),
                Kind::Long | Kind::Hour | Kind::Timestamp | Kind::CubicMeters => {
                    Values::Long(Vec::new())
                }
            })
            .collect();
        self.frame(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_kept_as_long_as_replaced_files() {
        assert_eq!(
            LOG_RETENTION,
            format!("interval {} hours", crate::hours::WATERMARK_HOURS)
        );
    }

    #[test]
    fn frames_follow_the_schema() -> Result<()> {
        let rows = HOURLY_USAGE.frame(vec![
            Values::Str(vec!["C1".into()]),
            Values::Long(vec![10]),
            Values::Long(vec![1500]),
            Values::Long(vec![2]),
            Values::Long(vec![1]),
        ])?;
        let names: Vec<&str> = rows.get_column_names().iter().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "customer_id",
                "usage_hour",
                "usage_ml",
                "reading_count",
                "meter_count"
            ]
        );
        let wrong_kind = HOURLY_USAGE.frame(vec![
            Values::Str(vec!["C1".into()]),
            Values::Str(vec!["10".into()]),
            Values::Long(vec![1500]),
            Values::Long(vec![2]),
            Values::Long(vec![1]),
        ]);
        assert!(
            matches!(&wrong_kind, Err(Error::TableData { column, .. }) if column == "usage_hour"),
            "{wrong_kind:?}"
        );
        let short = HOURLY_USAGE.frame(vec![Values::Str(vec!["C1".into()])]);
        assert!(matches!(short, Err(Error::TableData { .. })));
        // An empty frame has the table's columns, as the README documents `run_metrics`.
        let empty = RUN_METRICS.empty_frame()?;
        let names: Vec<&str> = empty
            .get_column_names()
            .iter()
            .map(|n| n.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "batch_id",
                "started_at",
                "files",
                "lines_read",
                "accepted",
                "duplicates",
                "conflicts",
                "late",
                "future",
                "malformed",
                "hours_touched",
                "state_rows_read",
                "watermark_hour",
                "duration_ms",
                "plan_ms",
                "parse_ms",
                "dedup_ms",
                "hourly_usage_ms",
                "cumulative_usage_ms",
                "finish_ms",
                "hourly_usage_version",
                "hourly_usage_files",
                "cumulative_usage_version",
                "cumulative_usage_files",
                "held_back_files",
            ]
        );
        assert_eq!(empty.height(), 0);
        Ok(())
    }
}
