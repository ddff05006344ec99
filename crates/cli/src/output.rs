//! Human-friendly tables and JSON output.

/// Pretty-printed JSON on stdout.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// A plain text table with padded columns.
/// A time in Unix milliseconds (a JSON number) as `2026-11-27 18:16:02`
/// (UTC); `-` when absent.
pub fn human_time(millis: &serde_json::Value) -> String {
    millis
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// `text` with control characters (terminal escapes from request paths a
/// client chose) shown as `\u{…}` instead of acting on the terminal.
pub fn printable(text: &str) -> String {
    isola_core::text::escape_controls(text).into_owned()
}

pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_dates() {
        assert_eq!(
            super::human_time(&serde_json::json!(1_795_000_000_000i64)),
            "2026-11-18 11:06:40"
        );
        assert_eq!(super::human_time(&serde_json::Value::Null), "-");
    }

    #[test]
    fn tables_pad_columns() {
        let out = table(
            &["NAME", "V"],
            &[
                vec!["hello-world".into(), "3".into()],
                vec!["a".into(), "12".into()],
            ],
        );
        assert_eq!(out, "NAME         V\nhello-world  3\na            12\n");
    }
}
