//! Progress bars (indicatif) on stderr, drawn only when stderr is a terminal
//! and the job has already taken over a second: short jobs and pipes print
//! nothing.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar that appears after a second of work.
pub struct Bar {
    bar: ProgressBar,
    started: Instant,
    shown: bool,
    terminal: bool,
}

const DELAY: Duration = Duration::from_secs(1);

impl Bar {
    /// A bar over `total` bytes (`bytes = true`) or items.
    pub fn new(message: &str, total: u64, bytes: bool) -> Bar {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        let template = if bytes {
            "{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
        } else {
            "{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, {eta})"
        };
        // Invariant: the templates above are valid.
        bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
        bar.set_message(message.to_owned());
        Bar { bar, started: Instant::now(), shown: false, terminal: std::io::stderr().is_terminal() }
    }

    /// Moves the bar to `done` of `total`.
    pub fn set(&mut self, done: u64, total: u64) {
        if !self.shown && self.terminal && self.started.elapsed() >= DELAY {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    /// A callback for the library's `*_with_progress` hooks.
    pub fn hook(&mut self) -> impl FnMut(vmsnap::file::Progress) + '_ {
        |p| self.set(p.done, p.total)
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
