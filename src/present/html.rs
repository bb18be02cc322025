//! Small HTML fragments for the notebook's outputs: escaped text, key/value tables, the first
//! rows of a frame. Plain strings, no styling beyond what Jupyter applies to tables, so the
//! executed notebook stays small and reads the same in any front end.

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

/// Preformatted, escaped text (query plans).
pub fn pre(text: &str) -> String {
    format!("<pre>{}</pre>", escape(text))
}

/// A table with a header row and rows of cells (all escaped); numbers are right-aligned.
pub fn table<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let cell = cell.as_ref();
            let numeric = !cell.is_empty()
                && cell
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | ','));
            let align = if numeric {
                " style=\"text-align:right\""
            } else {
                ""
            };
            let _ = write!(out, "<td{align}>{}</td>", escape(cell));
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
            "<table><thead><tr><th>customer_id</th><th>usage_ml</th></tr></thead><tbody>\
             <tr><td>C&lt;1&gt;</td><td style=\"text-align:right\">1500</td></tr>\
             <tr><td>C2</td><td></td></tr></tbody></table>"
        );
        Ok(())
    }
}
