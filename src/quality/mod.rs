//! How good an answer is: scorers against a reference answer, and agreement between
//! two answers to the same turn. Pure functions of text, each returning a score in
//! [0, 1]; the quality step ([`crate::steps::quality`]) applies them to measured rows.
//!
//! Normalisation (for `exact` and `contains`): lower case, every character that is
//! neither a letter, a digit nor whitespace removed, runs of whitespace made one space,
//! trimmed. "The answer is: B." and "the answer is b" are then equal.

/// The scorers against a reference, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scorer {
    /// The normalised answer equals the normalised reference.
    Exact,
    /// The normalised answer contains the normalised reference.
    Contains,
    /// The multiple-choice letter (A–J) the answer gives equals the reference's.
    Choice,
    /// The first number in the answer is within the relative tolerance of the
    /// reference's first number.
    Number,
}

impl Scorer {
    pub const CHOICES: [(&str, Scorer); 4] =
        [("exact", Scorer::Exact), ("contains", Scorer::Contains), ("choice", Scorer::Choice), ("number", Scorer::Number)];

    pub fn parse(text: &str) -> Option<Scorer> {
        Self::CHOICES.iter().find(|(n, _)| *n == text).map(|(_, s)| *s)
    }

    pub fn name(self) -> &'static str {
        Self::CHOICES.iter().find(|(_, s)| *s == self).map_or("exact", |(n, _)| n)
    }

    /// The answer's score against `reference`: 1 or 0.
    pub fn score(self, answer: &str, reference: &str, tolerance: f64) -> f64 {
        let hit = match self {
            Scorer::Exact => normalised(answer) == normalised(reference),
            Scorer::Contains => {
                let r = normalised(reference);
                !r.is_empty() && format!(" {} ", normalised(answer)).contains(&format!(" {r} "))
            }
            Scorer::Choice => matches!((choice(answer), choice(reference)), (Some(a), Some(b)) if a == b),
            Scorer::Number => match (first_number(answer), first_number(reference)) {
                (Some(a), Some(b)) => (a - b).abs() <= tolerance * b.abs().max(f64::MIN_POSITIVE),
                _ => false,
            },
        };
        if hit { 1.0 } else { 0.0 }
    }
}

/// Lower case, letters, digits and single spaces only.
pub fn normalised(text: &str) -> String {
    let kept: String = text.chars().flat_map(char::to_lowercase).filter(|c| c.is_alphanumeric() || c.is_whitespace()).collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The multiple-choice letter an answer gives, the way MMMU's evaluation parses
/// responses: `(B)` first, then a letter standing alone (`B`, `B.`, `B)`, `B:`), the
/// last one when there are several; a bare reference such as `B` is its own letter.
pub fn choice(text: &str) -> Option<char> {
    const LETTERS: std::ops::RangeInclusive<char> = 'A'..='J';
    let chars: Vec<char> = text.chars().collect();
    let mut bracketed = None;
    for w in chars.windows(3) {
        if w[0] == '(' && w[2] == ')' && LETTERS.contains(&w[1].to_ascii_uppercase()) {
            bracketed = Some(w[1].to_ascii_uppercase());
        }
    }
    if bracketed.is_some() {
        return bracketed;
    }
    let mut alone = None;
    for (i, &c) in chars.iter().enumerate() {
        // Upper case only: a lower-case `a` is far more often the article.
        if !LETTERS.contains(&c) {
            continue;
        }
        let before = i == 0 || !chars[i - 1].is_alphanumeric();
        let after = chars.get(i + 1).is_none_or(|n| !n.is_alphanumeric());
        if before && after {
            alone = Some(c);
        }
    }
    alone
}

/// The first number in `text` (`-3`, `2.5`, `1,234`, `1e3`).
pub fn first_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|b| b.is_ascii_digit())?;
    let start = if start > 0 && bytes[start - 1] == b'-' { start - 1 } else { start };
    let mut end = start + 1;
    while end < bytes.len() {
        let b = bytes[end];
        let digit_follows = bytes.get(end + 1).is_some_and(u8::is_ascii_digit);
        if b.is_ascii_digit() || ((b == b'.' || b == b',') && digit_follows) {
            end += 1;
        } else {
            break;
        }
    }
    text[start..end].replace(',', "").parse().ok()
}

/// chrF from its published definition (Popović, 2015): character n-grams of
/// orders 1 to 6 with whitespace removed, precision and recall averaged over the
/// orders, then F with β = 2 (recall weighs twice). On a 0–1 scale: 1 for identical
/// texts; 1 when both are empty, 0 when only one is.
pub fn chrf(hypothesis: &str, reference: &str) -> f64 {
    const ORDERS: usize = 6;
    const BETA: f64 = 2.0;
    let h: Vec<char> = hypothesis.chars().filter(|c| !c.is_whitespace()).collect();
    let r: Vec<char> = reference.chars().filter(|c| !c.is_whitespace()).collect();
    match (h.is_empty(), r.is_empty()) {
        (true, true) => return 1.0,
        (true, false) | (false, true) => return 0.0,
        _ => {}
    }
    let (mut precision, mut recall, mut orders) = (0.0, 0.0, 0);
    for n in 1..=ORDERS {
        if h.len() < n || r.len() < n {
            continue;
        }
        let (hc, rc) = (ngrams(&h, n), ngrams(&r, n));
        let matched: u32 = hc.iter().map(|(g, &k)| k.min(*rc.get(g).unwrap_or(&0))).sum();
        precision += matched as f64 / (h.len() - n + 1) as f64;
        recall += matched as f64 / (r.len() - n + 1) as f64;
        orders += 1;
    }
    let (p, r) = (precision / orders as f64, recall / orders as f64);
    if p + r == 0.0 { 0.0 } else { (1.0 + BETA * BETA) * p * r / (BETA * BETA * p + r) }
}

/// The n-grams of `s`, counted.
fn ngrams(s: &[char], n: usize) -> std::collections::HashMap<&[char], u32> {
    let mut m: std::collections::HashMap<&[char], u32> = Default::default();
    for g in s.windows(n) {
        *m.entry(g).or_default() += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scorers_compare_what_they_say() {
        assert_eq!(Scorer::Exact.score("The answer is: B.", "the answer is b", 0.0), 1.0);
        assert_eq!(Scorer::Exact.score("B", "C", 0.0), 0.0);
        assert_eq!(Scorer::Contains.score("I think it is a red car, yes.", "red car", 0.0), 1.0);
        assert_eq!(Scorer::Contains.score("I think it is a redcar", "red car", 0.0), 0.0);
        assert_eq!(Scorer::Choice.score("The correct option is (C) because…", "C", 0.0), 1.0);
        assert_eq!(Scorer::Choice.score("Answer: B. Not A.", "A", 0.0), 1.0, "the last letter standing alone");
        assert_eq!(Scorer::Choice.score("a cat", "A", 0.0), 0.0, "a lower-case article is not a choice");
        assert_eq!(Scorer::Number.score("about 3.14 metres", "3.1416", 0.01), 1.0);
        assert_eq!(Scorer::Number.score("-2 degrees", "2", 0.01), 0.0);
        assert_eq!(Scorer::Number.score("1,234 people", "1234", 0.0), 1.0);
        assert_eq!(Scorer::Number.score("none", "0", 0.1), 0.0);
        assert_eq!(Scorer::Exact.score("", "x", 0.0), 0.0, "an empty answer scores 0");
    }

    #[test]
    fn chrf_follows_its_definition() {
        assert_eq!(chrf("a cat", "a cat"), 1.0);
        assert_eq!(chrf("", ""), 1.0);
        assert_eq!(chrf("", "x"), 0.0);
        // "ab" against "abc": order 1: P = 2/2, R = 2/3; order 2: P = 1/1, R = 1/2;
        // orders 3–6 are skipped (the hypothesis is shorter). P = 1, R = 7/12.
        let (p, r) = (1.0, 7.0 / 12.0);
        assert!((chrf("ab", "abc") - 5.0 * p * r / (4.0 * p + r)).abs() < 1e-12);
        assert!(chrf("the cat sat", "the cat sat down") > chrf("a dog ran", "the cat sat down"));
    }
}
