//! How the views show themselves: the bills and a customer's month.

use std::fmt;

use super::{Shown, chart, html};
use crate::hours::format_hour;
use crate::view::{BillsReport, CustomerMonth, cubic_meters};

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
            writeln!(
                f,
                "{} {:<7} at {}: {} customers, {} m³ in all, largest {} m³ ({})",
                m.month,
                if m.closed { "closed" } else { "to date" },
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
                    if m.closed { "closed" } else { "to date" }.to_owned(),
                    m.last_hour.clone(),
                    m.customers.to_string(),
                    cubic_meters(m.total_ml),
                    cubic_meters(m.total_ml / (m.customers.max(1) as i64)),
                    format!("{} ({})", cubic_meters(m.largest.1), m.largest.0),
                ]
            })
            .collect();
        html::para(&format!(
            "Bills are the running totals at each month's last hour; a month is closed once the \
             watermark ({}) passed its end.",
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
