//! A table as a lazy Polars source for people's queries (SQL from the notebook): nothing is read
//! until the query runs, and then only the hour partitions its filter can admit. Polars pushes
//! the query's filter down to the scan; comparisons of the partition column with a text
//! `YYYY-MM-DDTHH` (`=`, `<`, `<=`, `>`, `>=`, combined with `AND` and `OR`) rule out hours,
//! anything else reads every hour; a text column compared `=` or `>=` with a text skips the row
//! groups whose statistics rule it out. The scan applies the whole filter itself.
//!
//! The rows are handed to the caller's `shape` first (how people see them: hours as text, for
//! instance); its output schema is the source's schema, and the partition column must come out
//! of it as the hour's text, the form the filter compares.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;

use polars::prelude::*;

use super::Table;
use super::read::Wanted;
use super::schema::{Kind, Spec};
use crate::error::Error;
use crate::hours::format_hour;

/// How the scanned rows are shown: a frame of the table's rows in, the rows people see out.
pub type Shape = dyn Fn(DataFrame) -> PolarsResult<DataFrame> + Send + Sync;

struct Scan {
    table: Table,
    shape: Arc<Shape>,
    schema: SchemaRef,
}

impl Table {
    /// A lazy scan of the table's current version, its rows shaped by `shape` into `schema`.
    pub fn scan(self, shape: Arc<Shape>, schema: SchemaRef) -> PolarsResult<LazyFrame> {
        let name = self.spec.name;
        let scan = Scan {
            table: self,
            shape,
            schema: schema.clone(),
        };
        LazyFrame::anonymous_scan(
            Arc::new(scan),
            ScanArgsAnonymous {
                schema: Some(schema),
                name,
                ..ScanArgsAnonymous::default()
            },
        )
    }
}

impl AnonymousScan for Scan {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self, _infer_schema_length: Option<usize>) -> PolarsResult<SchemaRef> {
        Ok(self.schema.clone())
    }

    fn allows_predicate_pushdown(&self) -> bool {
        true
    }

    fn scan(&self, args: AnonymousScanArgs) -> PolarsResult<DataFrame> {
        let partition = self.table.spec.partition;
        let hours: BTreeSet<i64> = self
            .table
            .partitions()
            .into_iter()
            .filter(|&h| match (&args.predicate, partition) {
                (Some(p), Some(column)) => admits(p, column, &format_hour(h)),
                _ => true,
            })
            .collect();
        if partition.is_some() && hours.is_empty() {
            return (self.shape)(self.table.spec.empty_frame().map_err(to_polars)?);
        }
        // A filter `text column = 'value'` (alone or in an AND) reads only the rows holding the
        // value, from the row groups whose statistics admit it; `text column >= 'value'` skips
        // the row groups whose statistics rule it out.
        let spec = self.table.spec;
        let predicate = args.predicate.as_ref();
        let equal = predicate.and_then(|p| equal_text(p, spec));
        let from = predicate.and_then(|p| text_from(p, spec));
        let values;
        let read = match (&equal, &from) {
            (Some((column, value)), _) => {
                values = BTreeSet::from([value.to_owned()]);
                super::block_on(
                    self.table
                        .read_row_groups(&hours, column, Wanted::Text(&values)),
                )
            }
            (None, Some((column, from))) => super::block_on(self.table.read_row_groups(
                &hours,
                column,
                Wanted::TextFrom(from),
            )),
            (None, None) => super::block_on(self.table.read_hours(&hours)),
        };
        let rows = read.and_then(|read| read).map_err(to_polars)?;
        let mut rows = (self.shape)(rows)?.lazy();
        if let Some(predicate) = args
            .predicate
            .as_ref()
            .map(applicable)
            .transpose()?
            .flatten()
        {
            rows = rows.filter(predicate);
        }
        if let Some(n) = args.n_rows {
            rows = rows.limit(n as IdxSize);
        }
        rows.collect()
    }
}

fn to_polars(e: Error) -> PolarsError {
    polars_err!(ComputeError: "{e}")
}

/// The filter Polars pushed down, in a form the scan can apply: Polars adds the filters a join
/// derives at run time (shown as opaque `Display` nodes that no query can run) as AND terms;
/// the join enforces them anyway, so they are dropped. Anywhere else they are an error, never
/// a wider filter.
fn applicable(predicate: &Expr) -> PolarsResult<Option<Expr>> {
    match predicate {
        Expr::Display { .. } => Ok(None),
        Expr::BinaryExpr { left, op, right }
            if matches!(op, Operator::And | Operator::LogicalAnd) =>
        {
            Ok(match (applicable(left)?, applicable(right)?) {
                (Some(l), Some(r)) => Some(Expr::BinaryExpr {
                    left: Arc::new(l),
                    op: *op,
                    right: Arc::new(r),
                }),
                (one, None) | (None, one) => one,
            })
        }
        other if other.into_iter().any(|e| matches!(e, Expr::Display { .. })) => {
            polars_bail!(ComputeError: "a filter this scan cannot apply: {other}")
        }
        other => Ok(Some(other.clone())),
    }
}

/// Whether `predicate` can hold for a row whose `column` is `value`: false only when a
/// comparison of `column` with a text rules it out.
fn admits(predicate: &Expr, column: &str, value: &str) -> bool {
    match predicate {
        Expr::BinaryExpr { left, op, right } => match op {
            Operator::And | Operator::LogicalAnd => {
                admits(left, column, value) && admits(right, column, value)
            }
            Operator::Or | Operator::LogicalOr => {
                admits(left, column, value) || admits(right, column, value)
            }
            op => match (
                column_of(left),
                text_of(right),
                column_of(right),
                text_of(left),
            ) {
                (Some(c), Some(text), _, _) if c == column => compare(value, *op, text),
                (_, _, Some(c), Some(text)) if c == column => match flipped(*op) {
                    Some(op) => compare(value, op, text),
                    None => true,
                },
                _ => true,
            },
        },
        _ => true,
    }
}

/// A text column of `spec` (not its partition) that `predicate` requires to equal a text, from
/// a comparison alone or in a chain of ANDs: the column the table's rows are sorted by when the
/// chain has one (its row groups' statistics select one row group a file; `billing_month` or
/// `kind` select them all), else the first.
fn equal_text(predicate: &Expr, spec: &Spec) -> Option<(&'static str, String)> {
    let mut found = Vec::new();
    equal_texts(predicate, spec, &mut found);
    match found.iter().position(|&(c, _)| Some(c) == spec.sorted_by) {
        Some(sorted) => Some(found.swap_remove(sorted)),
        None => found.into_iter().next(),
    }
}

/// Every text equality of [`equal_text`] in `predicate`, in order.
fn equal_texts(predicate: &Expr, spec: &Spec, found: &mut Vec<(&'static str, String)>) {
    let Expr::BinaryExpr { left, op, right } = predicate else {
        return;
    };
    match op {
        Operator::And | Operator::LogicalAnd => {
            equal_texts(left, spec, found);
            equal_texts(right, spec, found);
        }
        Operator::Eq => {
            let pair = match (column_of(left), text_of(right)) {
                (Some(c), Some(t)) => Some((c, t)),
                _ => column_of(right).zip(text_of(left)),
            };
            if let Some((name, text)) =
                pair.and_then(|(c, t)| text_column(spec, c).map(|name| (name, t)))
            {
                found.push((name, text.to_owned()));
            }
        }
        _ => {}
    }
}

/// A text column of `spec` (not its partition) that `predicate` requires to be at least a text
/// (`>=` or `>`), from a comparison alone or in a chain of ANDs.
fn text_from(predicate: &Expr, spec: &Spec) -> Option<(&'static str, String)> {
    let Expr::BinaryExpr { left, op, right } = predicate else {
        return None;
    };
    let (column, text) = match op {
        Operator::And | Operator::LogicalAnd => {
            return text_from(left, spec).or_else(|| text_from(right, spec));
        }
        Operator::Gt | Operator::GtEq => (column_of(left)?, text_of(right)?),
        Operator::Lt | Operator::LtEq => (column_of(right)?, text_of(left)?),
        _ => return None,
    };
    text_column(spec, column).map(|name| (name, text.to_owned()))
}

/// `column` if it is a text column of `spec` other than its partition.
fn text_column(spec: &Spec, column: &str) -> Option<&'static str> {
    spec.columns
        .iter()
        .find(|&&(name, kind)| name == column && kind == Kind::Str && spec.partition != Some(name))
        .map(|&(name, _)| name)
}

/// `value op text`, for the comparisons that can rule a value out.
fn compare(value: &str, op: Operator, text: &str) -> bool {
    match op {
        Operator::Eq | Operator::EqValidity => value == text,
        Operator::Lt => value < text,
        Operator::LtEq => value <= text,
        Operator::Gt => value > text,
        Operator::GtEq => value >= text,
        _ => true,
    }
}

/// `a op b` as `b op' a`.
fn flipped(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::Eq | Operator::EqValidity => op,
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        _ => return None,
    })
}

fn column_of(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(name) => Some(name.as_str()),
        Expr::Cast { expr, .. } => column_of(expr),
        _ => None,
    }
}

fn text_of(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(value) => value.extract_str(),
        Expr::Cast { expr, .. } => text_of(expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_with_the_hour_rule_hours_out() {
        let hour = || col("usage_hour");
        let june = hour().gt_eq(lit("2026-06-01T00"));
        assert!(admits(&june, "usage_hour", "2026-06-01T00"));
        assert!(!admits(&june, "usage_hour", "2026-05-31T23"));
        let one = hour().eq(lit("2026-06-02T05"));
        assert!(admits(&one, "usage_hour", "2026-06-02T05"));
        assert!(!admits(&one, "usage_hour", "2026-06-02T06"));
        // The literal on the left.
        let before = lit("2026-06-01T00").gt(hour());
        assert!(admits(&before, "usage_hour", "2026-05-31T23"));
        assert!(!admits(&before, "usage_hour", "2026-06-01T00"));
        // AND narrows, OR widens, anything else admits.
        let day = june.clone().and(hour().lt(lit("2026-06-02T00")));
        assert!(admits(&day, "usage_hour", "2026-06-01T12"));
        assert!(!admits(&day, "usage_hour", "2026-06-02T00"));
        let either = one.clone().or(hour().eq(lit("2026-06-03T00")));
        assert!(admits(&either, "usage_hour", "2026-06-03T00"));
        assert!(!admits(&either, "usage_hour", "2026-06-04T00"));
        let other = col("customer_id").eq(lit("C1")).and(one);
        assert!(admits(&other, "usage_hour", "2026-06-02T05"));
        assert!(!admits(&other, "usage_hour", "2026-06-02T04"));
        assert!(admits(&june.not(), "usage_hour", "2026-05-31T23"));
        assert!(admits(
            &col("usage_ml").gt(lit(5)),
            "usage_hour",
            "2026-05-31T23"
        ));
    }

    #[test]
    fn filters_derived_from_joins_are_dropped_from_and_terms_only() -> PolarsResult<()> {
        let dynamic = || Expr::Display {
            inputs: vec![col("customer_id")],
            fmt_str: Box::new("dynamic join filter".into()),
        };
        let hour = col("usage_hour").eq(lit("2026-06-02T05"));
        let applied = applicable(&hour.clone().and(dynamic()))?;
        assert_eq!(applied.map(|e| e.to_string()), Some(hour.to_string()));
        assert!(applicable(&dynamic())?.is_none());
        assert!(applicable(&hour.or(dynamic())).is_err());
        Ok(())
    }

    #[test]
    fn an_equal_text_reads_only_its_rows() {
        let spec = &crate::table::HOURLY_USAGE;
        let customer = col("customer_id").eq(lit("C7"));
        let both = col("usage_hour")
            .gt_eq(lit("2026-06-01T00"))
            .and(customer.clone());
        assert_eq!(
            equal_text(&both, spec),
            Some(("customer_id", "C7".to_owned()))
        );
        assert_eq!(
            equal_text(&lit("C7").eq(col("customer_id")), spec),
            Some(("customer_id", "C7".to_owned()))
        );
        // Of two, the column the rows are sorted by, wherever it is in the chain.
        let cumulative = &crate::table::CUMULATIVE_USAGE;
        let month = col("billing_month").eq(lit("2026-06"));
        assert_eq!(
            equal_text(&month.clone().and(customer.clone()), cumulative),
            Some(("customer_id", "C7".to_owned()))
        );
        assert_eq!(
            equal_text(&month, cumulative),
            Some(("billing_month", "2026-06".to_owned()))
        );
        // Not under an OR, not a number column, not the partition.
        assert_eq!(
            equal_text(&customer.or(col("usage_ml").eq(lit(1))), spec),
            None
        );
        assert_eq!(equal_text(&col("usage_ml").eq(lit(1)), spec), None);
        assert_eq!(
            equal_text(&col("usage_hour").eq(lit("2026-06-01T00")), spec),
            None
        );
        let quarantine = &crate::table::QUARANTINE;
        let since = col("source_file").gt_eq(lit("ingest_hour=2026-06-01T00"));
        let wanted = Some(("source_file", "ingest_hour=2026-06-01T00".to_owned()));
        assert_eq!(text_from(&since, quarantine), wanted);
        assert_eq!(
            text_from(&col("reason").eq(lit("late")).and(since), quarantine),
            wanted
        );
        assert_eq!(
            text_from(
                &lit("ingest_hour=2026-06-01T00").lt_eq(col("source_file")),
                quarantine
            ),
            wanted
        );
        assert_eq!(
            text_from(&col("source_file").lt(lit("x")), quarantine),
            None
        );
    }
}
