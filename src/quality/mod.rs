//! How good an answer is: scorers against a reference answer, and agreement between
//! two answers to the same turn. Pure functions of text, each returning a score in
//! [0, 1]; the quality step ([`crate::steps::quality`]) applies them to measured rows.
//!
//! Normalisation (for `exact` and `contains`): lower case, every character that is
//! neither a letter, a digit nor whitespace removed (but a minus sign before a digit
//! and a decimal point between digits kept: `-1` is not `1`, `3.14` not `314`), runs
//! of whitespace made one space, trimmed. "The answer is: B." and "the answer is b"
//! are then equal. A reference a scorer cannot read (nothing left after
//! normalisation, no letter for `choice`, no number for `number`) scores nothing: the
//! turn is unscored, not failed.
//!
//! A judge model scores too ([`judge`]): its prompt and the strict reading of its reply.

pub mod judge;

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

    /// The answer's score against `reference`, 1 or 0; None when the reference gives
    /// this scorer nothing to compare with.
    pub fn score(self, answer: &str, reference: &str, tolerance: f64) -> Option<f64> {
        let hit = match self {
            Scorer::Exact => {
                let r = normalised(reference);
                if r.is_empty() {
                    return None;
                }
                normalised(answer) == r
            }
            Scorer::Contains => {
                let r = normalised(reference);
                if r.is_empty() {
                    return None;
                }
                format!(" {} ", normalised(answer)).contains(&format!(" {r} "))
            }
            Scorer::Choice => letter(answer) == Some(letter(reference)?),
            Scorer::Number => {
                let b = first_number(reference)?;
                first_number(answer).is_some_and(|a| (a - b).abs() <= tolerance * b.abs().max(f64::MIN_POSITIVE))
            }
        };
        Some(if hit { 1.0 } else { 0.0 })
    }
}

/// Lower case, letters, digits and single spaces only; a minus sign before a digit and
/// a decimal point between digits stay.
pub fn normalised(text: &str) -> String {
    let chars: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let digit = |i: usize| chars.get(i).is_some_and(|c| c.is_ascii_digit());
    let kept: String = chars
        .iter()
        .enumerate()
        .filter(|&(i, c)| {
            c.is_alphanumeric()
                || c.is_whitespace()
                || (*c == '-' && digit(i + 1) && (i == 0 || !chars[i - 1].is_alphanumeric()))
                || (*c == '.' && i > 0 && digit(i - 1) && digit(i + 1))
        })
        .map(|(_, c)| *c)
        .collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The letter a text gives: a bare letter A–J in either case (`b`, `(B)`, `B.`), else
/// the one [`choice`] finds in it.
fn letter(text: &str) -> Option<char> {
    let bare: Vec<char> = text.chars().filter(|c| c.is_alphanumeric()).collect();
    match bare.as_slice() {
        [c] if ('A'..='J').contains(&c.to_ascii_uppercase()) => Some(c.to_ascii_uppercase()),
        _ => choice(text),
    }
}

/// The multiple-choice letter an answer gives, much as MMMU's evaluation parses
/// responses: `(B)` first (the last one), then a capital A–J standing alone (`B`, `B.`,
/// `B)`, `B:`), the last one when there are several. MMMU looks only for the letters
/// its question offers, which a scorer does not know; instead an `I` or an `A` that
/// reads as a word (followed by an apostrophe, or by a space and a lower-case word: "I
/// think", "A dog") is not taken for a choice.
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
        let word = matches!(c, 'I' | 'A')
            && (matches!(chars.get(i + 1), Some('\'' | '’'))
                || (chars.get(i + 1) == Some(&' ') && chars.get(i + 2).is_some_and(|n| n.is_lowercase())));
        if before && after && !word {
            alone = Some(c);
        }
    }
    alone
}

/// The first number in `text`: a minus sign where it stands as one (not after a
/// letter: `x-5` gives 5), digits with thousands separators only in groups of three
/// (`1,234`; `1,5` gives 1), a fraction (`2.5`, `.5`) and an exponent (`1e3`). A
/// number too large for a float is no number.
pub fn first_number(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let start = (0..b.len()).find(|&i| digit(i) || (b[i] == b'.' && digit(i + 1)))?;
    let negative = start > 0 && b[start - 1] == b'-' && (start < 2 || !b[start - 2].is_ascii_alphanumeric());
    let mut text_of = String::new();
    let mut i = start;
    while digit(i) {
        text_of.push(b[i] as char);
        i += 1;
        // A thousands separator: a comma and exactly three digits.
        if b.get(i) == Some(&b',') && (1..=3).all(|k| digit(i + k)) && !digit(i + 4) {
            i += 1;
        }
    }
    if b.get(i) == Some(&b'.') && digit(i + 1) {
        text_of.push('.');
        i += 1;
        while digit(i) {
            text_of.push(b[i] as char);
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let sign = matches!(b.get(i + 1), Some(b'-' | b'+'));
        let first = i + 1 + usize::from(sign);
        if digit(first) {
            text_of.push('e');
            if sign {
                text_of.push(b[i + 1] as char);
            }
            let mut j = first;
            while digit(j) {
                text_of.push(b[j] as char);
                j += 1;
            }
        }
    }
    let v: f64 = text_of.parse().ok()?;
    v.is_finite().then_some(if negative { -v } else { v })
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
        let s = |scorer: Scorer, a: &str, r: &str, tol: f64| scorer.score(a, r, tol);
        assert_eq!(s(Scorer::Exact, "The answer is: B.", "the answer is b", 0.0), Some(1.0));
        assert_eq!(s(Scorer::Exact, "B", "C", 0.0), Some(0.0));
        assert_eq!(s(Scorer::Exact, "-1", "1", 0.0), Some(0.0), "a minus sign is kept");
        assert_eq!(s(Scorer::Exact, "3.14", "314", 0.0), Some(0.0), "a decimal point is kept");
        assert_eq!(s(Scorer::Exact, "!!!", "???", 0.0), None, "a reference of punctuation only reads as nothing");
        assert_eq!(s(Scorer::Contains, "I think it is a red car, yes.", "red car", 0.0), Some(1.0));
        assert_eq!(s(Scorer::Contains, "I think it is a redcar", "red car", 0.0), Some(0.0));
        assert_eq!(s(Scorer::Choice, "The correct option is (C) because…", "C", 0.0), Some(1.0));
        assert_eq!(s(Scorer::Choice, "Answer: B. Not A.", "A", 0.0), Some(1.0), "the last letter standing alone");
        assert_eq!(s(Scorer::Choice, "a cat", "A", 0.0), Some(0.0), "a lower-case article is not a choice");
        assert_eq!(s(Scorer::Choice, "b", "b", 0.0), Some(1.0), "a bare letter, in either case");
        assert_eq!(s(Scorer::Choice, "B", "b", 0.0), Some(1.0), "a bare reference letter in either case");
        assert_eq!(s(Scorer::Choice, "B. I'm sure", "B", 0.0), Some(1.0), "I'm is a word");
        assert_eq!(s(Scorer::Choice, "The answer is B, I think", "B", 0.0), Some(1.0));
        assert_eq!(s(Scorer::Choice, "C. A dog", "C", 0.0), Some(1.0));
        assert_eq!(s(Scorer::Choice, "B", "blue", 0.0), None, "a reference without a letter scores nothing");
        assert_eq!(s(Scorer::Number, "about 3.14 metres", "3.1416", 0.01), Some(1.0));
        assert_eq!(s(Scorer::Number, "-2 degrees", "2", 0.01), Some(0.0));
        assert_eq!(s(Scorer::Number, "1,234 people", "1234", 0.0), Some(1.0));
        assert_eq!(s(Scorer::Number, "none", "0", 0.1), Some(0.0));
        assert_eq!(s(Scorer::Number, "1", "blue", 0.1), None);
        assert_eq!(s(Scorer::Exact, "", "x", 0.0), Some(0.0), "an empty answer scores 0");
    }

    #[test]
    fn numbers_are_read_as_written() {
        for (text, n) in [
            ("1e3", Some(1000.0)),
            ("2.5E-1 m", Some(0.25)),
            (".5", Some(0.5)),
            ("1,2,3", Some(1.0)),
            ("1,5", Some(1.0)),
            ("12,345,678 km", Some(12_345_678.0)),
            ("version 1.2.3", Some(1.2)),
            ("x-5 is 3", Some(5.0)),
            ("it is -7", Some(-7.0)),
            ("1e400", None),
            ("nothing", None),
        ] {
            assert_eq!(first_number(text), n, "{text}");
        }
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
