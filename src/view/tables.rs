//! The pipeline's tables as `sql` sees them: for each output table, whether it exists yet, its
//! Delta version, data files, rows and columns (with the types people query).

use super::open_if_exists;
use super::sql::shown_schema;
use crate::config::Config;
use crate::error::Result;
use crate::table::output_tables;

/// One table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Its name, as `sql` registers it.
    pub name: &'static str,
    /// Version, data files and rows (from the files' statistics), once it exists.
    pub state: Option<(i64, usize, Option<usize>)>,
    /// The partition column, if any.
    pub partition: Option<&'static str>,
    /// Columns and the types a query sees.
    pub columns: Vec<(String, String)>,
}

/// Every output table.
#[derive(Debug, Clone, Default)]
pub struct TablesReport {
    /// In commit order.
    pub tables: Vec<TableInfo>,
}

/// The output tables, read-only.
pub fn tables(config: &Config) -> Result<TablesReport> {
    let mut tables = Vec::new();
    for spec in output_tables() {
        let state = open_if_exists(config, spec)?.map(|t| {
            let (version, files) = t.version_and_files();
            (version, files, t.rows())
        });
        tables.push(TableInfo {
            name: spec.name,
            state,
            partition: spec.partition,
            columns: shown_schema(spec)
                .iter()
                .map(|(name, dtype)| (name.to_string(), dtype.to_string()))
                .collect(),
        });
    }
    Ok(TablesReport { tables })
}
