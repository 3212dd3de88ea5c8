//! Progress of long operations: a bar on a terminal, a few plain lines otherwise. Always on
//! standard error, so that standard output stays clean for results.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    total: u64,
    /// Last tenth of the work reported as a plain line.
    last_tenth: Option<u64>,
}

impl Progress {
    /// A progress display for `label`, with `total` items (0 when unknown).
    pub fn new(label: &str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = if total > 0 {
                ProgressBar::new(total)
            } else {
                ProgressBar::new_spinner()
            };
            let template = if total > 0 {
                "{msg:>14} [{bar:40}] {pos}/{len} ({eta})"
            } else {
                "{msg:>14} {spinner} {pos}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            label: label.to_string(),
            bar,
            total,
            last_tenth: None,
        }
    }

    /// A display for work of unknown size: a spinner on a terminal, one line otherwise.
    pub fn spinner(label: &str) -> Self {
        let progress = Progress::new(label, 0);
        match &progress.bar {
            Some(bar) => bar.enable_steady_tick(std::time::Duration::from_millis(100)),
            None => eprintln!("{label}..."),
        }
        progress
    }

    /// Moves to a new phase with its own total (or sets the total of this one).
    pub fn phase(&mut self, label: &str, total: u64) {
        if self.label != label || self.total != total {
            if let Some(bar) = &self.bar {
                bar.set_message(label.to_string());
                bar.set_length(total);
                bar.set_position(0);
            }
            self.label = label.to_string();
            self.total = total;
            self.last_tenth = None;
        }
    }

    pub fn set(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => {
                let tenth = (done * 10).checked_div(self.total).unwrap_or(10).min(10);
                if self.last_tenth != Some(tenth) {
                    self.last_tenth = Some(tenth);
                    if self.total > 0 {
                        eprintln!("{}: {done}/{} ({}%)", self.label, self.total, tenth * 10);
                    } else {
                        eprintln!("{}: {done}", self.label);
                    }
                }
            }
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
