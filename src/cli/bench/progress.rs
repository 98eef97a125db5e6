//! Progress of a suite on stderr: a bar (with the case running and a line per finished case
//! above it) when stderr is a terminal, one plain line per finished case otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    done: usize,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:30} {pos}/{len} cases, {elapsed} elapsed, ~{eta} left: {msg}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Progress {
            bar,
            total,
            done: 0,
        }
    }

    /// Case `id` starts.
    pub fn start(&mut self, id: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(id.to_string());
        }
    }

    /// Case `id` finished; `summary` says how.
    pub fn finish(&mut self, id: &str, summary: &str) {
        self.done += 1;
        let line = format!("[{}/{}] {id}: {summary}", self.done, self.total);
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.inc(1);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar; the finished lines stay.
    pub fn close(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
