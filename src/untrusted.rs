//! Text from outside (a server's answers, headers and version strings, a file's names
//! and values, an environment), as it may be shown: the one escaping function.
//!
//! Such text may hold a newline that makes a line look like `pipeline`'s own output
//! (a `hint:` it never gave), an escape sequence that rewrites the terminal, or a
//! bidirectional override that makes a line read other than it is. Everything shown
//! in a message or a log goes through [`escaped`] (or [`quoted`], which also puts it
//! in backticks); the Markdown report's filters (`steps::report::markdown`) drop the
//! same characters ([`is_unsafe_char`]) and escape Markdown's own.

/// Control characters (newlines included), zero-width and bidirectional-formatting
/// characters, and the byte-order mark: what must never reach a terminal or a
/// report as it is.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}')
}

/// At most `max` characters of `text`, each unsafe one ([`is_unsafe_char`]) shown as
/// its escape (`\n`, `\u{202e}`), and `…` where it was cut.
pub fn escaped(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 2));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if is_unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` in backticks for a message, [`escaped`] and cut at 60 characters.
pub fn quoted(text: &str) -> String {
    format!("`{}`", escaped(text, 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_unsafe_is_shown_as_it_is() {
        assert_eq!(escaped("ok\nhint: trust me", 100), "ok\\nhint: trust me");
        assert_eq!(escaped("evil\u{202E}gpj.exe\u{1b}[2J", 100), "evil\\u{202e}gpj.exe\\u{1b}[2J");
        assert_eq!(escaped("\u{FEFF}name", 100), "\\u{feff}name");
        assert_eq!(escaped("abcdef", 3), "abc…");
        assert_eq!(quoted("a\tb"), "`a\\tb`");
        assert_eq!(quoted(&"x".repeat(61)), format!("`{}…`", "x".repeat(60)));
    }
}
