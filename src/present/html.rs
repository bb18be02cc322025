//! Small HTML fragments for the notebook's outputs: escaped text, key/value tables, the first
//! rows of a frame. Plain strings with inline styles only where Jupyter's own would mislead
//! (cell alignment, preformatted plans), so the executed notebook stays small and reads the same
//! in any front end.

use std::fmt::Write;

use polars::prelude::*;

/// `text` with `&`, `<`, `>` and `"` escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(ch),
        }
    }
    out
}

/// A paragraph of escaped text.
pub fn para(text: &str) -> String {
    format!("<p>{}</p>", escape(text))
}

/// Preformatted, escaped text (query plans): a monospace block that keeps its indentation and
/// scrolls rather than wraps, in JupyterLab and in an nbconvert export alike.
pub fn pre(text: &str) -> String {
    format!("<pre {PRE_STYLE}>{}</pre>", escape(text))
}

const PRE_STYLE: &str = "style=\"white-space:pre;overflow-x:auto;text-align:left;\
                         font-family:monospace\"";
/// Jupyter's stylesheets right-align every table cell: each cell says how it is aligned.
const LEFT: &str = " style=\"text-align:left\"";
const RIGHT: &str = " style=\"text-align:right\"";

/// A table with a header row and rows of cells (all escaped); columns of numbers are
/// right-aligned, the others left-aligned, headers as their column.
pub fn table<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    // A sign, then digits with separators: `-1,500.25` is a number, `2026-04` is not.
    let is_number = |cell: &str| {
        let digits = cell.strip_prefix('-').unwrap_or(cell);
        digits.starts_with(|c: char| c.is_ascii_digit())
            && digits
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | ','))
    };
    let align: Vec<&str> = (0..header.len())
        .map(|i| {
            let cells = rows.iter().filter_map(|r| r.get(i)).map(AsRef::as_ref);
            let mut filled = cells.filter(|c| !c.is_empty()).peekable();
            if filled.peek().is_some() && filled.all(is_number) {
                RIGHT
            } else {
                LEFT
            }
        })
        .collect();
    let mut out = String::from("<table><thead><tr>");
    for (h, a) in header.iter().zip(&align) {
        let _ = write!(out, "<th{a}>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let a = align.get(i).copied().unwrap_or(LEFT);
            let _ = write!(out, "<td{a}>{}</td>", escape(cell.as_ref()));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// The rows of `df` (all of them: pass a frame's head) as a table; nulls are empty cells.
pub fn frame(df: &DataFrame) -> String {
    let header: Vec<&str> = df
        .get_column_names()
        .into_iter()
        .map(|n| n.as_str())
        .collect();
    let rows: Vec<Vec<String>> = (0..df.height())
        .map(|i| {
            df.columns()
                .iter()
                .map(|c| match c.get(i) {
                    Ok(AnyValue::Null) | Err(_) => String::new(),
                    Ok(AnyValue::String(s)) => s.to_owned(),
                    Ok(AnyValue::StringOwned(s)) => s.to_string(),
                    Ok(v) => v.to_string(),
                })
                .collect()
        })
        .collect();
    table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn numbers_align_right_and_dates_left() {
        let rows = vec![
            vec!["-1,500.25", "2026-04", "C1"],
            vec!["3", "2026-05", "7"],
        ];
        let shown = table(&["ml", "month", "customer"], &rows);
        assert!(
            shown.contains("<th style=\"text-align:right\">ml</th>"),
            "{shown}"
        );
        assert!(
            shown.contains("<th style=\"text-align:left\">month</th>"),
            "{shown}"
        );
        assert!(
            shown.contains("<th style=\"text-align:left\">customer</th>"),
            "{shown}"
        );
    }

    #[test]
    fn frames_become_tables() -> PolarsResult<()> {
        let df = DataFrame::new(
            2,
            vec![
                Column::new("customer_id".into(), ["C<1>", "C2"]),
                Column::new("usage_ml".into(), [Some(1500i64), None]),
            ],
        )?;
        assert_eq!(
            frame(&df),
            "<table><thead><tr><th style=\"text-align:left\">customer_id</th>\
             <th style=\"text-align:right\">usage_ml</th></tr></thead><tbody>\
             <tr><td style=\"text-align:left\">C&lt;1&gt;</td>\
             <td style=\"text-align:right\">1500</td></tr>\
             <tr><td style=\"text-align:left\">C2</td><td style=\"text-align:right\"></td></tr>\
             </tbody></table>"
        );
        Ok(())
    }
}
