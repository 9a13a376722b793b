//! Untrusted text in the Markdown report: the `md` and `mdcode` template filters.
//!
//! The HTML report is auto-escaped by minijinja. Markdown has no such mode, and what
//! the report shows comes partly from outside: answers, a server's version string, its
//! command line, model paths, axis values. A `|` would split a table row, a newline
//! end it, a backtick open a code span, `<script>` pass through to a renderer that
//! allows HTML, and a bidirectional override make a line read other than it is. Every
//! value the Markdown template prints goes through one of these filters.

use crate::untrusted::is_unsafe_char;

/// Text for a Markdown line or a table cell: one line, without control or
/// bidirectional-formatting characters, with Markdown's active characters escaped.
/// Two are escaped only where they act, to keep the file readable as text: `_` where
/// it could start or end emphasis (not in `snake_case`), and `]` before `(`, which is
/// what makes `[text](url)` a link (a bare `[17.0 – 18.0]` is text).
pub fn md(text: &str) -> String {
    escape(text, false)
}

fn escape(text: &str, brackets: bool) -> String {
    let chars: Vec<char> = text.chars().filter(|c| !is_unsafe_char(*c) || *c == '\n').collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let word = |j: Option<usize>| j.and_then(|j| chars.get(j)).is_some_and(|c| c.is_alphanumeric());
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '<' | '>' | '|' | '~' | '&' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '_' if !(word(i.checked_sub(1)) && word(Some(i + 1))) => out.push_str("\\_"),
            '[' | ']' if brackets => {
                out.push('\\');
                out.push(c);
            }
            ']' if chars.get(i + 1) == Some(&'(') => out.push_str("\\]"),
            c => out.push(c),
        }
    }
    out
}

/// An image's alt text (`![alt](file)`): [`md`], and every bracket escaped, since
/// any unbalanced `]` ends the alt text and the rest would be read as Markdown.
pub fn mdalt(text: &str) -> String {
    escape(text, true)
}

/// A code span holding `text` literally: a fence of more backticks than any run
/// inside, padded where the text starts or ends with one; in a table (`table = true`)
/// `|` is escaped, as GitHub-flavoured Markdown requires even inside code.
pub fn mdcode(text: &str, table: Option<bool>) -> String {
    let text: String = text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).filter(|c| !is_unsafe_char(*c)).collect();
    let text = if table.unwrap_or(false) { text.replace('|', "\\|") } else { text };
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') { " " } else { "" };
    format!("{fence}{pad}{text}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cannot_leave_its_cell() {
        assert_eq!(md("a|b\nc"), "a\\|b c");
        assert_eq!(md("# <script>x</script>"), "\\# \\<script\\>x\\</script\\>");
        assert_eq!(md("qwen_3b and _em_"), "qwen_3b and \\_em\\_");
        assert_eq!(md("evil\u{202E}txt.exe"), "eviltxt.exe");
        assert_eq!(md("[link](http://x) ![img](y)"), "[link\\](http://x) ![img\\](y)");
        assert_eq!(md("17.5 [17.0 – 18.0]"), "17.5 [17.0 – 18.0]");
        assert_eq!(md("&#x202E;"), "\\&\\#x202E;");
        assert_eq!(mdalt("latency, m [a] b](x) \\]"), "latency, m \\[a\\] b\\](x) \\\\\\]");
    }

    #[test]
    fn code_spans_hold_any_text() {
        assert_eq!(mdcode("vllm serve", None), "`vllm serve`");
        assert_eq!(mdcode("a`b", None), "``a`b``");
        assert_eq!(mdcode("`x`", None), "`` `x` ``");
        assert_eq!(mdcode("a|b\nc", Some(true)), "`a\\|b c`");
    }
}
