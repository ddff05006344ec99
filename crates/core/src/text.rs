//! Text that came from outside (request paths, names a client chose) made
//! safe to show: in a log line or on a terminal.

use std::borrow::Cow;

/// `text` with its control characters escaped (`\u{a}`, `\u{9b}`), so that
/// it cannot start a new log line or drive a terminal.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_unicode());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert_eq!(super::escape_controls("/a/é"), "/a/é");
        assert_eq!(
            super::escape_controls("/a\u{9b}31m\n"),
            "/a\\u{9b}31m\\u{a}"
        );
    }
}
