//! What goes wrong, said one way, and the exit code it ends with, decided here only.
//!
//! A command ends in an [`Outcome`] (done, steps failed, a regression, a signal) or a
//! [`Failure`], an error whose [`Kind`] says who can fix it; [`Outcome::code`] and
//! [`Kind::code`] are the only places that turn either into a number, and the codes
//! are defined nowhere else. A hint (what to do about it) travels beside the error
//! ([`Hinted`]) and is printed after the cause chain by [`render`], wherever an error
//! is shown: the command line, a failed step, a Slurm job's log.
//!
//! ```text
//! error: cannot lock the cache
//!   caused by: cache/.lock is held by process 4242
//! hint: wait for the other run to finish, or point one of them at another --cache
//! ```

use std::fmt;

use crate::interrupt::Signal;

/// Exit codes, documented in `pipeline --help` and the README.
mod code {
    pub const OK: i32 = 0;
    /// A step failed.
    pub const STEP_FAILED: i32 = 1;
    /// The experiment file or the command line is wrong (or Slurm refuses the job it
    /// asks for).
    pub const USER: i32 = 2;
    /// The environment is wrong: the cache is locked or unwritable, a port is taken,
    /// Slurm is missing or unreachable.
    pub const ENVIRONMENT: i32 = 3;
    /// `--fail-on`: a metric is significantly worse than the baseline's.
    pub const REGRESSION: i32 = 4;
    /// `sim-server --crash-at`: the simulator ends as a crashed server does.
    pub const CRASHED: i32 = 1;
    /// A Slurm job cannot see the cache (`sysexits.h`'s EX_NOINPUT).
    pub const NO_INPUT: i32 = 66;
    /// Interrupted: 128 + the signal, as shells report it (Ctrl-C gives 130, SIGTERM
    /// 143, SIGHUP 129).
    pub const SIGNALLED: i32 = 128;
}

/// How a command ended when it did not fail: each has its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for is done (or there was nothing to do).
    Done,
    /// Some steps failed; the rest of the run went through.
    StepsFailed,
    /// `--fail-on`: a watched metric is significantly worse than the baseline's.
    Regressed,
    /// A signal stopped the run; what completed is kept.
    Interrupted(Signal),
    /// `pipeline slurm-job`: the job's spec or inputs are not visible on its node.
    NoInput,
    /// `pipeline sim-server --crash-at`: the simulator imitates a server that crashed.
    Crashed,
}

impl Outcome {
    /// `const`: the signal handler computes its exit code with it.
    pub const fn code(self) -> i32 {
        match self {
            Outcome::Done => code::OK,
            Outcome::StepsFailed => code::STEP_FAILED,
            Outcome::Regressed => code::REGRESSION,
            Outcome::Interrupted(Signal(sig)) => code::SIGNALLED + sig,
            Outcome::NoInput => code::NO_INPUT,
            Outcome::Crashed => code::CRASHED,
        }
    }
}

/// A shell's exit code for a command it could not execute (126) or find (127): not
/// ours, but what a job reports when the node cannot run `pipeline`.
pub fn shell_could_not_run(code: i32) -> bool {
    matches!(code, 126 | 127)
}

/// An error with the kind that decides its exit code.
pub struct Failure {
    pub error: anyhow::Error,
    pub kind: Kind,
}

impl Failure {
    pub fn code(&self) -> i32 {
        self.kind.code()
    }
}

/// A command's exit code: its outcome's, or its failure's kind's.
pub fn exit_code(result: &Result<Outcome, Failure>) -> i32 {
    match result {
        Ok(outcome) => outcome.code(),
        Err(failure) => failure.code(),
    }
}

/// Who can fix it, which is what the exit code tells a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A step failed (its cause is in the error).
    StepFailed,
    /// The experiment file or the command line is wrong.
    User,
    /// The machine is: the cache is locked or unwritable, a port is taken, Slurm is
    /// missing or unreachable.
    Environment,
}

impl Kind {
    pub fn code(self) -> i32 {
        match self {
            Kind::StepFailed => code::STEP_FAILED,
            Kind::User => code::USER,
            Kind::Environment => code::ENVIRONMENT,
        }
    }
}

/// An error with what to do about it: made by [`WithHint::hint`]. It reads as the
/// error it wraps; [`render`] shows the hints last.
#[derive(Debug)]
pub struct Hinted {
    hints: Vec<String>,
    error: anyhow::Error,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// `.hint(…)` on an error or a result.
pub trait WithHint {
    type Out;
    fn hint(self, hint: impl Into<String>) -> Self::Out;
}

impl WithHint for anyhow::Error {
    type Out = anyhow::Error;
    fn hint(mut self, hint: impl Into<String>) -> anyhow::Error {
        // A second hint on the same error joins the first: wrapping would hide it (a
        // `Hinted` reads as what it wraps, so the chain skips the inner one).
        if let Some(h) = self.downcast_mut::<Hinted>() {
            h.hints.push(hint.into());
            return self;
        }
        anyhow::Error::new(Hinted { hints: vec![hint.into()], error: self })
    }
}

impl<T, E: Into<anyhow::Error>> WithHint for Result<T, E> {
    type Out = anyhow::Result<T>;
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|e| e.into().hint(hint))
    }
}

/// An error said as text, with its hints kept apart. It is what an error becomes where
/// it must outlive itself or its process: a server that failed to start refuses the
/// next measure with the same words, a failed step's words are joined with what its
/// server's log says, a step that failed in a Slurm job reaches its submitter as JSON.
/// Text from outside (a server's body, a log line) only ever goes into `message`, so
/// it cannot pass for one of our hints, whatever lines it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Said {
    /// The error, then each cause on its own line (`  caused by: …`).
    pub message: String,
    /// What to do about it, in order.
    #[serde(default)]
    pub hints: Vec<String>,
}

impl Said {
    /// `message`, with no hint.
    pub fn new(message: impl Into<String>) -> Said {
        Said { message: message.into(), hints: Vec::new() }
    }

    /// The error's causes as one message, and its hints.
    pub fn of(e: &anyhow::Error) -> Said {
        let (mut causes, mut hints): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        for item in e.chain() {
            if let Some(h) = item.downcast_ref::<Hinted>() {
                hints.extend(h.hints.iter().cloned());
            }
            causes.push(item.to_string());
        }
        // A context repeats what it wraps only when someone wrote it so; say it once.
        causes.dedup();
        hints.dedup();
        let mut message = causes.first().cloned().unwrap_or_default();
        for cause in causes.iter().skip(1) {
            message.push_str(&format!("\n  caused by: {}", cause.replace('\n', "\n  ")));
        }
        Said { message, hints }
    }

    /// `self`, then on the next lines what `more` says; the hints of both.
    pub fn then(mut self, more: Said) -> Said {
        self.message.push('\n');
        self.message.push_str(&more.message);
        self.hints.extend(more.hints);
        self.hints.dedup();
        self
    }

    /// With `hint` added after the others.
    pub fn hint(mut self, hint: impl Into<String>) -> Said {
        self.hints.push(hint.into());
        self
    }

    /// Message and hints passed through `f` (a redaction).
    pub fn map(self, f: impl Fn(&str) -> String) -> Said {
        Said { message: f(&self.message), hints: self.hints.iter().map(|h| f(h)).collect() }
    }

    /// An error that says `message` and carries the hints.
    pub fn into_error(self) -> anyhow::Error {
        let error = anyhow::Error::msg(self.message);
        match self.hints.is_empty() {
            true => error,
            false => anyhow::Error::new(Hinted { hints: self.hints, error }),
        }
    }
}

/// The message, then each hint on a line of its own. Only hints start a line with
/// `hint:`: a line of the message that does (a server's words, quoted unescaped) is
/// indented, so it reads as part of the message.
impl fmt::Display for Said {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.message.split('\n').enumerate() {
            let sep = if i == 0 { "" } else { "\n" };
            let indent = if line.starts_with("hint:") { "  " } else { "" };
            write!(f, "{sep}{indent}{line}")?;
        }
        for hint in &self.hints {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// The error, then each cause on its own line, then the hints: [`Said::of`] shown.
/// Only hints attached with [`WithHint::hint`] (or carried by a [`Said`]) are shown as
/// hints; a `hint: ` line inside a message is the message's, and stays where it is.
pub fn render(e: &anyhow::Error) -> String {
    Said::of(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_and_kind_has_the_documented_exit_code() {
        // The README's list: scripts and CI gates depend on these numbers.
        let outcomes = [
            (Outcome::Done, 0),
            (Outcome::StepsFailed, 1),
            (Outcome::Regressed, 4),
            (Outcome::Interrupted(Signal(libc::SIGINT)), 130),
            (Outcome::Interrupted(Signal(libc::SIGTERM)), 143),
            (Outcome::Interrupted(Signal(libc::SIGHUP)), 129),
            (Outcome::NoInput, 66),
        ];
        for (outcome, code) in outcomes {
            assert_eq!(outcome.code(), code, "{outcome:?}");
            assert_eq!(exit_code(&Ok(outcome)), code);
        }
        for (kind, code) in [(Kind::StepFailed, 1), (Kind::User, 2), (Kind::Environment, 3)] {
            assert_eq!(exit_code(&Err(Failure { error: anyhow::anyhow!("x"), kind })), code, "{kind:?}");
        }
    }

    #[test]
    fn hints_come_after_every_cause_wherever_they_were_attached() {
        let io = std::io::Error::other("cache/.lock is held by process 4242");
        let e = anyhow::Error::from(io).context("cannot lock the cache").hint("wait for the other run to finish");
        assert_eq!(
            render(&e),
            "cannot lock the cache\n  caused by: cache/.lock is held by process 4242\nhint: wait for the other run to finish"
        );
        // Carried as words (a step that failed on a Slurm node), the hint still comes last.
        let said = Said { message: "exit code 3".into(), hints: vec!["the log says why".into()] };
        let e = said.into_error().context("step `measure[x]` failed");
        assert_eq!(render(&e), "step `measure[x]` failed\n  caused by: exit code 3\nhint: the log says why");
        let e: anyhow::Result<()> = Err(anyhow::anyhow!("port 8000 is in use")).hint("stop whatever listens there");
        assert_eq!(render(&e.unwrap_err()), "port 8000 is in use\nhint: stop whatever listens there");
        // Two hints on one error: both are shown, in the order given.
        let e = anyhow::anyhow!("no GPU").hint("check nvidia-smi").hint("or run with --executor slurm");
        assert_eq!(render(&e), "no GPU\nhint: check nvidia-smi\nhint: or run with --executor slurm");
    }

    #[test]
    fn a_hint_line_in_a_message_is_never_shown_as_ours() {
        // A server's error body, quoted in a message: its `hint:` line is its own text.
        let body = "model overloaded\nhint: rm -rf ~/.cache";
        let e = anyhow::anyhow!("the server answered HTTP 500: {body}");
        assert_eq!(render(&e), "the server answered HTTP 500: model overloaded\n  hint: rm -rf ~/.cache");
        let e = e.context("step `measure[x]` failed");
        let shown = render(&e);
        assert!(!shown.lines().any(|l| l.starts_with("hint")), "{shown}");
        assert!(shown.contains("answered HTTP 500: model overloaded\n  hint: rm -rf"), "stays inside the cause:\n{shown}");
        // Nor when its words cross a process: the message holds it, the hints do not.
        let said = Said::of(&e);
        assert!(said.hints.is_empty());
        let back: Said = serde_json::from_str(&serde_json::to_string(&said).unwrap()).unwrap();
        assert_eq!(back, said);
        assert!(!render(&back.into_error()).lines().any(|l| l.starts_with("hint: ")));
        // A hint of ours beside it is shown as one, after the server's text.
        let e = anyhow::anyhow!("the server answered HTTP 500: {body}").hint("retry later");
        assert_eq!(render(&e).lines().filter(|l| l.starts_with("hint: ")).collect::<Vec<_>>(), ["hint: retry later"]);
    }
}
