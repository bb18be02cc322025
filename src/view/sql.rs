//! SQL over the pipeline's tables, for people exploring them from the notebook: Polars' SQL
//! context with every output table registered as a lazy scan ([`crate::table::Table::scan`]),
//! so a filter on `usage_hour` reads only the hours it admits. Columns read as in any other
//! Delta reader: hours as `YYYY-MM-DDTHH` text, timestamps as RFC 3339 text (UTC), cubic meters
//! as exact decimal text. Read-only; a table that does not exist yet is not registered.
//!
//! A query may name the data's latest hours with placeholders, replaced by text before it runs
//! (so that filters on `usage_hour` stay comparisons with text, which prune hours):
//! `{latest_hour}` (the latest hour of `cumulative_usage`), `{day_start}` (23 hours before it:
//! the last 24 hours), `{month_start}` (the first hour of its billing month), `{month}` (that
//! month, `YYYY-MM`) and `{customer}` (the parameter `chart_customer`, or the customer with the
//! largest running total at the latest hour).

use std::sync::Arc;

use polars::prelude::*;
use polars::sql::SQLContext;

use super::customer::largest_customer;
use super::{cubic_meters, open_all};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hours::{billing_month, format_hour, month_start_hour};
use crate::table::{CUMULATIVE_USAGE, Kind, Spec, Table, output_tables};

/// Rows a query shows at most; a query that returns more says so.
pub const SQL_ROW_LIMIT: usize = 100;

/// What a query returned.
#[derive(Debug, Clone)]
pub struct SqlResult {
    /// The query, its placeholders replaced.
    pub query: String,
    /// The rows shown (at most `limit`).
    pub rows: DataFrame,
    /// The most rows shown.
    pub limit: usize,
    /// The query returned more rows than shown.
    pub cut: bool,
}

/// Runs `query` over the tables that exist; shows at most `limit` rows.
pub fn sql(config: &Config, query: &str, limit: usize) -> Result<SqlResult> {
    let err = Error::polars("sql");
    let specs: Vec<&'static Spec> = output_tables().collect();
    let tables = open_all(config, &specs, true)?;
    let cumulative = specs
        .iter()
        .zip(&tables)
        .find(|(spec, _)| spec.name == CUMULATIVE_USAGE.name)
        .and_then(|(_, table)| table.as_ref());
    let expanded = expand(config, query, cumulative)?;
    let mut context = SQLContext::new();
    for (spec, table) in specs.into_iter().zip(tables) {
        if let Some(table) = table {
            let shape: Arc<crate::table::Shape> =
                Arc::new(move |rows: DataFrame| shown_rows(spec, rows));
            context.register(
                spec.name,
                table.scan(shape, shown_schema(spec)).map_err(err)?,
            );
        }
    }
    let rows = context
        .execute(&expanded)
        .map_err(err)?
        .limit(limit as IdxSize + 1)
        .collect()
        .map_err(err)?;
    let cut = rows.height() > limit;
    Ok(SqlResult {
        query: expanded,
        rows: rows.head(Some(limit)),
        limit,
        cut,
    })
}

/// The placeholders a query may use.
const PLACEHOLDERS: [&str; 5] = [
    "{latest_hour}",
    "{day_start}",
    "{month_start}",
    "{month}",
    "{customer}",
];

/// `query` with its placeholders replaced (only those it uses are worked out), from
/// `cumulative_usage` (`None`: it does not exist yet).
fn expand(config: &Config, query: &str, cumulative: Option<&Table>) -> Result<String> {
    let used: Vec<&str> = PLACEHOLDERS
        .into_iter()
        .filter(|p| query.contains(p))
        .collect();
    if used.is_empty() {
        return Ok(query.to_owned());
    }
    let none_yet = || {
        Error::Request(format!(
            "{} need data: no table has rows yet",
            used.join(", ")
        ))
    };
    let table = cumulative.ok_or_else(none_yet)?;
    let latest = *table.partitions().last().ok_or_else(none_yet)?;
    let tz = config.billing_timezone;
    let mut expanded = query.to_owned();
    for &placeholder in &used {
        let value = match placeholder {
            "{latest_hour}" => format_hour(latest),
            "{day_start}" => format_hour(latest - 23),
            "{month_start}" => format_hour(month_start_hour(latest, tz)?),
            "{month}" => billing_month(latest, tz)?,
            _ if !config.chart_customer.is_empty() => config.chart_customer.clone(),
            _ => largest_customer(table, latest)?.ok_or_else(none_yet)?,
        };
        expanded = expanded.replace(placeholder, &value);
    }
    Ok(expanded)
}

/// How people see a column of kind `kind`.
fn shown_type(kind: Kind) -> DataType {
    match kind {
        Kind::Str | Kind::Hour | Kind::Timestamp | Kind::CubicMeters => DataType::String,
        Kind::Long => DataType::Int64,
        Kind::Bool => DataType::Boolean,
        Kind::Binary => DataType::Binary,
    }
}

/// The schema people see of `spec`'s table.
pub(super) fn shown_schema(spec: &Spec) -> SchemaRef {
    Arc::new(
        spec.columns
            .iter()
            .map(|&(name, kind)| Field::new(name.into(), shown_type(kind)))
            .collect(),
    )
}

/// A frame of `spec`'s rows as people see them.
fn shown_rows(spec: &Spec, rows: DataFrame) -> PolarsResult<DataFrame> {
    let mut columns = Vec::with_capacity(spec.columns.len());
    for &(name, kind) in spec.columns {
        let column = rows.column(name)?;
        let text = |f: &dyn Fn(i64) -> String| -> PolarsResult<Column> {
            let values: Vec<Option<String>> = column.i64()?.iter().map(|v| v.map(f)).collect();
            Ok(Column::new(name.into(), values))
        };
        columns.push(match kind {
            Kind::Hour => text(&format_hour)?,
            Kind::Timestamp => text(&|us| {
                chrono::DateTime::from_timestamp_micros(us)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                    .unwrap_or_else(|| us.to_string())
            })?,
            Kind::CubicMeters => text(&cubic_meters)?,
            Kind::Str | Kind::Long | Kind::Bool | Kind::Binary => column.clone(),
        });
    }
    DataFrame::new(rows.height(), columns)
}
