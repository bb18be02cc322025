//! What computed a stored row: the library (its version and the digest of the sources it was
//! built from, `src/source_digest.rs`) and the parameters that decided the row's values. Every
//! bill records both, so a bill questioned months later names the code and the settings behind
//! it.

use std::collections::BTreeMap;

/// The library that computes rows: `aquabill <version> source <digest of its sources>`. The
/// digest is the one in the file name of the notebook's library
/// (`aquabill-libs/libaquabill-<digest>.so`); `cargo run --example source_digest` prints a
/// checkout's.
pub fn computed_by() -> String {
    format!(
        "aquabill {} source {}",
        env!("CARGO_PKG_VERSION"),
        env!("AQUABILL_SOURCE_DIGEST")
    )
}

/// The parameters that decide a bill's value, as a JSON object with its keys sorted: the
/// billing time zone (which hours make the month) and the clock skew the closing batch accepted
/// records with.
pub fn bill_parameters(billing_timezone: &str, clock_skew_minutes: i64) -> String {
    let parameters = BTreeMap::from([
        (
            "billing_timezone",
            serde_json::Value::from(billing_timezone),
        ),
        (
            "clock_skew_minutes",
            serde_json::Value::from(clock_skew_minutes),
        ),
    ]);
    serde_json::Value::from_iter(parameters.into_iter().map(|(k, v)| (k.to_owned(), v))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parameters_are_a_json_object_with_sorted_keys() {
        assert_eq!(
            bill_parameters("America/New_York", 5),
            r#"{"billing_timezone":"America/New_York","clock_skew_minutes":5}"#
        );
    }

    #[test]
    fn the_library_names_its_version_and_sources() {
        let by = computed_by();
        let digest = by.rsplit(' ').next().unwrap_or_default();
        assert!(by.starts_with("aquabill "), "{by}");
        assert_eq!(digest.len(), 32, "{by}");
        assert!(digest.chars().all(|c| c.is_ascii_hexdigit()), "{by}");
    }
}
