//! Progress of long commands on stderr, decided once for the process: a live bar when stderr is a terminal,
//! a plain line every `--progress-interval` seconds when it is a file, a pipe or a CI log (where a bar would
//! print nothing until the end), nothing with `-q`.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown in this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Nothing (`-q`).
    Quiet,
    /// A bar redrawn in place (stderr is a terminal).
    Bar,
    /// A line at most every this often (stderr is not a terminal).
    Lines(Duration),
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Decide how progress is shown, from the global flags; called once by `main` before any command runs.
pub fn configure(quiet: bool, interval: Duration) {
    let mode = if quiet {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Bar
    } else {
        Mode::Lines(interval)
    };
    // A second call (only tests could make one) keeps the first decision.
    let _ = MODE.set(mode);
}

fn mode() -> Mode {
    *MODE.get_or_init(|| Mode::Quiet)
}

/// One long task's progress: `set_position`/`inc` as work is done, `set_message` for what the counter alone
/// does not say (losses, skipped items), `println` for lines that must stay.
pub struct Progress {
    bar: ProgressBar,
    lines: Option<Mutex<Lines>>,
}

/// State of the line-per-interval report.
struct Lines {
    every: Duration,
    label: String,
    unit: String,
    total: Option<u64>,
    started: Instant,
    /// The first position set (a resumed run starts past 0); the rate counts from it.
    first_position: Option<u64>,
    position: u64,
    last_line: Instant,
    message: String,
}

impl Progress {
    /// Progress of `label` (e.g. "training", "encoding") counted in `unit` (e.g. "steps", "images") out of
    /// `total` when known (a spinner with a count and a rate when not).
    pub fn new(label: &str, total: Option<u64>, unit: &str) -> Self {
        let mode = mode();
        let target = match mode {
            Mode::Bar => ProgressDrawTarget::stderr(),
            Mode::Quiet | Mode::Lines(_) => ProgressDrawTarget::hidden(),
        };
        let bar = ProgressBar::with_draw_target(total, target);
        let template = match total {
            Some(_) => format!(
                "{label} {{wide_bar}} {{pos}}/{{len}} {unit} [{{elapsed_precise}} < {{eta_precise}}] {{msg}}"
            ),
            None => format!("{{spinner}} {label} {{pos}} {unit}, {{per_sec}}, {{elapsed}} {{msg}}"),
        };
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        if total.is_none() && mode == Mode::Bar {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        let lines = match mode {
            Mode::Lines(every) => {
                let now = Instant::now();
                Some(Mutex::new(Lines {
                    every,
                    label: label.to_string(),
                    unit: unit.to_string(),
                    total,
                    started: now,
                    first_position: None,
                    position: 0,
                    last_line: now,
                    message: String::new(),
                }))
            }
            Mode::Quiet | Mode::Bar => None,
        };
        Self { bar, lines }
    }

    /// The work done so far is `position` (a resumed run starts past 0: the rate counts from here).
    pub fn set_position(&self, position: u64) {
        self.bar.set_position(position);
        self.with_lines(|l| {
            l.first_position.get_or_insert(position);
            l.position = position;
        });
    }

    /// `n` more units are done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.with_lines(|l| l.position += n);
    }

    /// What the count alone does not say, shown after it.
    pub fn set_message(&self, message: String) {
        self.with_lines(|l| l.message.clone_from(&message));
        self.bar.set_message(message);
    }

    /// A line that stays (above the bar on a terminal; hidden with `-q`).
    pub fn println(&self, line: impl AsRef<str>) {
        match mode() {
            Mode::Quiet => {}
            Mode::Bar => self.bar.println(line.as_ref()),
            Mode::Lines(_) => eprintln!("{}", line.as_ref()),
        }
    }

    /// Run `f` (which may log) without garbling the bar.
    pub fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        self.bar.suspend(f)
    }

    /// Remove the bar (the command prints its own summary).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Update the line report and print a line if the interval has passed.
    fn with_lines(&self, update: impl FnOnce(&mut Lines)) {
        let Some(lines) = &self.lines else {
            return;
        };
        let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
        update(&mut l);
        let now = Instant::now();
        if now.duration_since(l.last_line) >= l.every {
            l.last_line = now;
            eprintln!("{}", l.line(now));
        }
    }
}

impl Lines {
    /// `training: 120/5000 steps (2.4%), 1.9 steps/s, 42m50s left; loss 3.1 ...`
    fn line(&self, now: Instant) -> String {
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let done = self
            .position
            .saturating_sub(self.first_position.unwrap_or(0)) as f64;
        let rate = if elapsed > 0.0 { done / elapsed } else { 0.0 };
        let mut line = format!("{}: {}", self.label, self.position);
        if let Some(total) = self.total {
            let percent = 100.0 * self.position as f64 / total.max(1) as f64;
            line += &format!("/{total} {} ({percent:.1}%)", self.unit);
        } else {
            line += &format!(" {}", self.unit);
        }
        line += &format!(", {rate:.1} {}/s", self.unit);
        if let Some(total) = self.total {
            if rate > 0.0 {
                let left = total.saturating_sub(self.position) as f64 / rate;
                line += &format!(", {} left", clock(left));
            }
        }
        line += &format!(", {} elapsed", clock(elapsed));
        if !self.message.is_empty() {
            line += &format!("; {}", self.message);
        }
        line
    }
}

/// Seconds as `1h02m03s`, `2m03s` or `3s`.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_count_rate_time_left_and_message() {
        let started = Instant::now();
        let l = Lines {
            every: Duration::ZERO,
            label: "training".into(),
            unit: "steps".into(),
            total: Some(1000),
            started,
            first_position: Some(100),
            position: 300,
            last_line: started,
            message: "loss 2.5000".into(),
        };
        let line = l.line(started + Duration::from_secs(100));
        assert_eq!(
            line,
            "training: 300/1000 steps (30.0%), 2.0 steps/s, 5m50s left, 1m40s elapsed; loss 2.5000"
        );
    }

    #[test]
    fn without_a_total_a_line_has_a_count_and_a_rate() {
        let started = Instant::now();
        let l = Lines {
            every: Duration::ZERO,
            label: "embedding".into(),
            unit: "samples".into(),
            total: None,
            started,
            first_position: None,
            position: 50,
            last_line: started,
            message: String::new(),
        };
        let line = l.line(started + Duration::from_secs(3725));
        assert_eq!(
            line,
            "embedding: 50 samples, 0.0 samples/s, 1h02m05s elapsed"
        );
    }

    #[test]
    fn the_rate_counts_from_the_first_position_set_even_when_it_is_zero() {
        let now = Instant::now();
        let lines = |every| Lines {
            every,
            label: "training".into(),
            unit: "steps".into(),
            total: Some(10),
            started: now,
            first_position: None,
            position: 0,
            last_line: now,
            message: String::new(),
        };
        let first = |start: u64| {
            let p = Progress {
                bar: ProgressBar::hidden(),
                lines: Some(Mutex::new(lines(Duration::MAX))),
            };
            p.set_position(start);
            p.set_position(start + 1);
            let l = p.lines.as_ref().unwrap().lock().unwrap();
            l.first_position
        };
        assert_eq!(first(0), Some(0), "a new run");
        assert_eq!(first(7), Some(7), "a resumed run");
    }
}
