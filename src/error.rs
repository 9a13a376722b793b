//! What goes wrong, said one way. An error's [`Kind`] decides the exit code; a hint
//! (what to do about it) travels beside the error ([`Hinted`]) and is printed after
//! the cause chain by [`render`], wherever an error is shown: the command line, a
//! failed step, a Slurm job's log.
//!
//! ```text
//! error: cannot lock the cache
//!   caused by: cache/.lock is held by process 4242
//! hint: wait for the other run to finish, or point one of them at another --cache
//! ```

use std::fmt;

use crate::exit;

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
            Kind::StepFailed => exit::STEP_FAILED,
            Kind::User => exit::USER,
            Kind::Environment => exit::ENVIRONMENT,
        }
    }
}

/// An error with what to do about it: made by [`WithHint::hint`]. It reads as the
/// error it wraps; [`render`] shows the hint last.
#[derive(Debug)]
pub struct Hinted {
    pub hint: String,
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
    fn hint(self, hint: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Hinted { hint: hint.into(), error: self })
    }
}

impl<T, E: Into<anyhow::Error>> WithHint for Result<T, E> {
    type Out = anyhow::Result<T>;
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|e| e.into().hint(hint))
    }
}

/// The error, then each cause on its own line, then the hints. A message that carries
/// a hint as a line of text (`hint: …`, as a step that failed in another process
/// reports it) has that line moved to the end with the others.
pub fn render(e: &anyhow::Error) -> String {
    let (mut causes, mut hints): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for item in e.chain() {
        if let Some(h) = item.downcast_ref::<Hinted>() {
            hints.push(h.hint.clone());
        }
        let text = item.to_string();
        let (said, rest): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.starts_with("hint: "));
        hints.extend(said.iter().map(|l| l["hint: ".len()..].to_string()));
        causes.push(rest.join("\n"));
    }
    // A context repeats what it wraps only when someone wrote it so; say it once.
    causes.dedup();
    hints.dedup();
    let mut out = causes.first().cloned().unwrap_or_default();
    for cause in causes.iter().skip(1) {
        out.push_str(&format!("\n  caused by: {}", cause.replace('\n', "\n  ")));
    }
    for hint in hints {
        out.push_str(&format!("\nhint: {hint}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_come_after_every_cause_wherever_they_were_attached() {
        let io = std::io::Error::other("cache/.lock is held by process 4242");
        let e = anyhow::Error::from(io).context("cannot lock the cache").hint("wait for the other run to finish");
        assert_eq!(
            render(&e),
            "cannot lock the cache\n  caused by: cache/.lock is held by process 4242\nhint: wait for the other run to finish"
        );
        // A hint baked into a message (a step that failed on a Slurm node) moves last.
        let e = anyhow::anyhow!("exit code 3\nhint: the log says why").context("step `measure[x]` failed");
        assert_eq!(render(&e), "step `measure[x]` failed\n  caused by: exit code 3\nhint: the log says why");
        let e: anyhow::Result<()> = Err(anyhow::anyhow!("port 8000 is in use")).hint("stop whatever listens there");
        assert_eq!(render(&e.unwrap_err()), "port 8000 is in use\nhint: stop whatever listens there");
    }
}
