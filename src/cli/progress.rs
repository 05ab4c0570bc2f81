//! What the command line shows while it works: progress bars (indicatif) on a terminal,
//! and log lines (tracing) everywhere, quiet with `-q`.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress bars and log lines that do not garble each other.
pub struct Reporter {
    multi: MultiProgress,
    /// Shows nothing at all (the ranks of a distributed run other than rank 0).
    silent: bool,
}

impl Reporter {
    /// Bars on stderr, unless `quiet` (indicatif hides them when stderr is not a terminal).
    pub fn new(quiet: bool) -> Self {
        let target = match quiet {
            true => ProgressDrawTarget::hidden(),
            false => ProgressDrawTarget::stderr(),
        };
        Reporter {
            multi: MultiProgress::with_draw_target(target),
            silent: false,
        }
    }

    /// Shows neither bars nor lines.
    pub fn silent() -> Self {
        Reporter {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            silent: true,
        }
    }

    /// A log line: above the bars on a terminal, through tracing otherwise.
    pub fn line(&self, text: &str) {
        if self.silent {
            return;
        }
        if self.multi.is_hidden() {
            tracing::info!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }

    /// A bar of `total` units, e.g. training steps.
    pub fn bar(&self, total: u64, unit: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        let template = format!(
            "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}  {{elapsed}} (eta {{eta}})"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }
}
