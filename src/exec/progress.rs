//! What a run shows while it works: a live bar with step counts and ETA on a terminal,
//! plain log lines otherwise (CI logs, pipes). Every step that runs is announced with
//! the reasons it runs, exactly as `pipeline plan` states them.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Print a line to stderr; a closed stderr must not stop a run (no `eprintln!` panic).
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps, eta {eta} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    /// A line above the bar (or on its own when there is no bar).
    pub fn line(&self, text: &str) {
        match &self.bar {
            // `println` on a hidden bar prints nothing, so only use it when visible.
            Some(bar) => bar.suspend(|| say(text)),
            None => say(text),
        }
    }

    pub fn started(&self, id: &str, reasons: &[String]) {
        let why = if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join("; ")) };
        self.line(&format!("run    {id}{why}"));
        if let Some(bar) = &self.bar {
            bar.set_message(id.to_string());
        }
    }

    pub fn finished(&self, id: &str, outcome: &str, took: Duration) {
        self.line(&format!("{outcome:<6} {id} in {:.2}s", took.as_secs_f64()));
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    pub fn cached(&self, id: &str, why: &str) {
        self.line(&format!("cached {id} ({why})"));
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
