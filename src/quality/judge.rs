//! The judge's side of scoring: the fixed prompt a judge model is asked with, and the
//! strict reading of its reply as a score in [0, 1]. Pure functions of text; the quality
//! step ([`crate::steps::quality::judge`]) sends the prompt and records what comes back.
//!
//! The prompt is fixed and versioned: [`JUDGE_PROMPT_VERSION`] enters every quality
//! step's key together with the judge's model identity, so a changed prompt re-judges
//! (and measures nothing). Change the text only together with the version.
//!
//! A reply is a score only when, trimmed, it is one decimal number from 0 to 1 and
//! nothing else (`1`, `0`, `0.75`, `.5`, `1.0`); anything else (`Score: 1`, `1/2`,
//! `yes`, `2`, an empty reply) is [`Unscored`]: the turn gets no score, the reason is
//! counted, and nothing fails.

/// The version of [`prompt`]'s text. Bump it with any change to the text.
pub const JUDGE_PROMPT_VERSION: u32 = 1;

/// Most tokens a judge may answer with: a score is one to four tokens; room for a
/// trailing newline, not for an essay.
pub const JUDGE_MAX_TOKENS: u32 = 16;

/// The first line of every judge prompt: the simulator recognises a judge request by
/// it (and its version).
const OPENING: &str = "You are grading an answer against a reference answer (pipeline judge prompt v1).";
const QUESTION: &str = "\n\nQuestion:\n<<<\n";
const REFERENCE: &str = "\n>>>\n\nReference answer:\n<<<\n";
const ANSWER: &str = "\n>>>\n\nAnswer to grade:\n<<<\n";
const CLOSING: &str = "\n>>>";

/// The instructions between the opening line and the question.
const INSTRUCTIONS: &str = "\nScore how well the answer agrees with the reference answer: 1 when it says what the reference says, \
0 when it does not, a fraction in between for a partly right answer. Wording, case and punctuation do not matter. \
Reply with the score alone, one number from 0 to 1, and nothing else.";

/// The judge prompt for one turn: its question (text parts), the reference answer
/// and the answer to grade. Sent as the only user message, at temperature 0.
pub fn prompt(question: &str, reference: &str, answer: &str) -> String {
    format!("{OPENING}{INSTRUCTIONS}{QUESTION}{question}{REFERENCE}{reference}{ANSWER}{answer}{CLOSING}")
}

/// The reference and the answer of a judge prompt of this version ([`prompt`]'s
/// inverse), None for any other text. The reference ends at the first `Answer to
/// grade` marker after it, so an answer (a server's text) that itself contains the
/// markers is read whole.
pub fn recognise(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix(OPENING)?.strip_suffix(CLOSING)?;
    let (_, after) = rest.split_once(REFERENCE)?;
    after.split_once(ANSWER)
}

/// Why a judge's reply is no score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unscored {
    /// The request failed (connection, HTTP error, timeout): counted in `failed`.
    RequestFailed,
    /// The reply is not one number alone.
    NotANumber,
    /// A number, but outside [0, 1].
    OutOfRange,
}

impl Unscored {
    pub fn name(self) -> &'static str {
        match self {
            Unscored::RequestFailed => "request-failed",
            Unscored::NotANumber => "not-a-number",
            Unscored::OutOfRange => "out-of-range",
        }
    }
}

/// The score a judge's reply gives: the whole reply, trimmed, is one plain decimal
/// number (digits with at most one decimal point; no sign, exponent or words) from 0
/// to 1.
pub fn score(reply: &str) -> Result<f64, Unscored> {
    let t = reply.trim();
    let plain = !t.is_empty()
        && t.chars().all(|c| c.is_ascii_digit() || c == '.')
        && t.chars().filter(|&c| c == '.').count() <= 1
        && t.chars().any(|c| c.is_ascii_digit());
    if !plain {
        return Err(Unscored::NotANumber);
    }
    let v: f64 = t.parse().map_err(|_| Unscored::NotANumber)?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(Unscored::OutOfRange) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_a_score_only_when_it_is_one_number_from_0_to_1() {
        for (reply, want) in [
            ("1", Ok(1.0)),
            ("0", Ok(0.0)),
            (" 0.75\n", Ok(0.75)),
            (".5", Ok(0.5)),
            ("1.0", Ok(1.0)),
            ("1.", Ok(1.0)),
            ("2", Err(Unscored::OutOfRange)),
            ("1.5", Err(Unscored::OutOfRange)),
            ("-0.5", Err(Unscored::NotANumber)),
            ("Score: 1", Err(Unscored::NotANumber)),
            ("1/2", Err(Unscored::NotANumber)),
            ("1e0", Err(Unscored::NotANumber)),
            ("0.5.1", Err(Unscored::NotANumber)),
            (".", Err(Unscored::NotANumber)),
            ("NaN", Err(Unscored::NotANumber)),
            ("", Err(Unscored::NotANumber)),
            ("yes", Err(Unscored::NotANumber)),
        ] {
            assert_eq!(score(reply), want, "{reply:?}");
        }
    }

    #[test]
    fn a_prompt_is_recognised_as_written() {
        let p = prompt("what is 1 + 1?", "2", "it is 2");
        assert_eq!(recognise(&p), Some(("2", "it is 2")));
        assert!(p.contains("what is 1 + 1?"));
        // An answer that repeats the markers is still read whole.
        let tricky = format!("x{ANSWER}y");
        assert_eq!(recognise(&prompt("q", "r", &tricky)), Some(("r", tricky.as_str())));
        assert_eq!(recognise("what is 1 + 1?"), None);
        assert!(OPENING.contains(&format!("prompt v{JUDGE_PROMPT_VERSION}")), "the opening names the version");
        assert_eq!(recognise(&p.replace("prompt v1", "prompt v2")), None, "another version is not this one");
    }
}
