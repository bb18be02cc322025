//! How the views show themselves: the bills, a customer's month, query results and the tables.

use std::fmt;

use super::{Shown, chart, html};
use crate::hours::format_hour;
use crate::view::{
    BillsReport, CustomerMonth, MonthBills, MonthStatus, SqlResult, TableInfo, TablesReport,
    cubic_meters,
};

/// What a month's row of the bills says of its status.
fn status(m: &MonthBills) -> &'static str {
    match m.status {
        MonthStatus::Closed => "closed",
        MonthStatus::FinalNotBilled => "final, not in monthly_bills",
        MonthStatus::Open => "to date",
    }
}

/// Bills with gaps, for closed months.
fn gaps(m: &MonthBills) -> String {
    m.with_gaps.map_or_else(String::new, |n| n.to_string())
}

impl fmt::Display for BillsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.months.is_empty() {
            return write!(f, "no bills yet");
        }
        writeln!(
            f,
            "watermark {}",
            self.watermark.as_deref().unwrap_or("none")
        )?;
        for m in &self.months {
            let gaps = m
                .with_gaps
                .map_or_else(String::new, |n| format!(", {n} with gaps in readings"));
            writeln!(
                f,
                "{} {} at {}: {} customers, {} m³ in all, largest {} m³ ({}){gaps}",
                m.month,
                status(m),
                m.last_hour,
                m.customers,
                cubic_meters(m.total_ml),
                cubic_meters(m.largest.1),
                m.largest.0
            )?;
        }
        Ok(())
    }
}

impl Shown for BillsReport {
    fn html(&self) -> String {
        if self.months.is_empty() {
            return html::para("no bills yet");
        }
        let rows: Vec<Vec<String>> = self
            .months
            .iter()
            .map(|m| {
                vec![
                    m.month.clone(),
                    status(m).to_owned(),
                    m.last_hour.clone(),
                    m.customers.to_string(),
                    cubic_meters(m.total_ml),
                    cubic_meters(m.total_ml / (m.customers.max(1) as i64)),
                    format!("{} ({})", cubic_meters(m.largest.1), m.largest.0),
                    gaps(m),
                ]
            })
            .collect();
        html::para(&format!(
            "A month closes once the watermark ({}) passes its end: its bills, the running \
             totals at its last hour, are then written once to monthly_bills, with how complete \
             each customer's readings were. The open month shows its totals to date.",
            self.watermark.as_deref().unwrap_or("none")
        )) + &html::table(
            &[
                "month",
                "status",
                "last hour",
                "customers",
                "total m³",
                "mean m³",
                "largest m³",
                "bills with gaps",
            ],
            &rows,
        )
    }
}

impl fmt::Display for CustomerMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.points.iter().filter(|p| p.usage_ml > 0).count();
        let total = self.points.last().map_or(0, |p| p.cumulative_ml);
        write!(
            f,
            "{} in {}: {} hours, {used} with usage, running total {} m³",
            self.customer,
            self.month,
            self.points.len(),
            cubic_meters(total)
        )
    }
}

impl Shown for CustomerMonth {
    fn html(&self) -> String {
        let so_far = self.points.last().map_or(0, |p| p.cumulative_ml);
        let title = format!(
            "{}, billing month {} ({}): {} m³ to {}",
            self.customer,
            self.month,
            self.time_zone,
            cubic_meters(so_far),
            self.points
                .last()
                .map_or_else(String::new, |p| format_hour(p.hour + 1))
        );
        chart::month_svg(&title, self.first_hour, self.last_hour, &self.points)
    }
}

/// What a query's result says under its rows.
fn sql_footer(r: &SqlResult) -> String {
    match (r.rows.height(), r.cut) {
        (_, true) => format!(
            "the first {} rows; the query returned more (add a LIMIT, or narrow it)",
            r.limit
        ),
        (1, false) => "1 row".to_owned(),
        (n, false) => format!("{n} rows"),
    }
}

impl fmt::Display for SqlResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.query)?;
        writeln!(f, "{}", self.rows)?;
        write!(f, "{}", sql_footer(self))
    }
}

impl Shown for SqlResult {
    fn html(&self) -> String {
        html::pre(&self.query) + &html::frame(&self.rows) + &html::para(&sql_footer(self))
    }
}

/// A table's state in words.
fn table_state(t: &TableInfo) -> [String; 3] {
    match t.state {
        None => ["not yet".to_owned(), String::new(), String::new()],
        Some((version, files, rows)) => [
            version.to_string(),
            files.to_string(),
            rows.map_or_else(|| "?".to_owned(), |r| r.to_string()),
        ],
    }
}

impl fmt::Display for TablesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.tables {
            let [version, files, rows] = table_state(t);
            writeln!(
                f,
                "{}: version {version}, {files} files, {rows} rows{}",
                t.name,
                t.partition
                    .map_or_else(String::new, |p| format!(", partitioned by {p}"))
            )?;
            let columns: Vec<String> = t.columns.iter().map(|(n, d)| format!("{n} {d}")).collect();
            writeln!(f, "  {}", columns.join(", "))?;
        }
        Ok(())
    }
}

impl Shown for TablesReport {
    fn html(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .tables
            .iter()
            .map(|t| {
                let [version, files, rows] = table_state(t);
                let columns: Vec<String> = t
                    .columns
                    .iter()
                    .map(|(n, d)| {
                        let part = if Some(n.as_str()) == t.partition {
                            " (partition)"
                        } else {
                            ""
                        };
                        format!("{n} {d}{part}")
                    })
                    .collect();
                vec![t.name.to_owned(), version, files, rows, columns.join(", ")]
            })
            .collect();
        html::para("The tables sql() queries (hours and times are UTC text):")
            + &html::table(&["table", "version", "files", "rows", "columns"], &rows)
    }
}
