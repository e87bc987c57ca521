//! Progress bars of the command line: on stderr, hidden when stderr is not a terminal (indicatif's default), so
//! scripts and tests see only the results on stdout.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use backset_copier::JobControl;
use indicatif::{ProgressBar, ProgressStyle};

/// How often a bar is refreshed from the job it follows.
pub const REFRESH: Duration = Duration::from_millis(100);

/// A byte progress bar labelled `what`.
pub fn bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(1);
    let style = ProgressStyle::with_template("{prefix:>11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_string());
    bar
}

/// Runs `work` on a scoped thread while a bar labelled `what` follows `control`'s progress; clears the bar after.
/// Returns as soon as `work` does (the bar's refresh waits on it, not on a timer).
pub fn follow<T: Send>(what: &str, control: &Arc<JobControl>, work: impl FnOnce() -> T + Send) -> T {
    let bar = bar(what);
    let out = std::thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let job = s.spawn(move || {
            let out = work();
            // Wakes the refresh loop now; a panic wakes it too, by dropping the sender.
            let _ = done_tx.send(());
            out
        });
        loop {
            let p = control.progress();
            bar.set_length(p.bytes_total.max(1));
            bar.set_position(p.bytes_done);
            if done_rx.recv_timeout(REFRESH) != Err(RecvTimeoutError::Timeout) {
                break;
            }
        }
        job.join()
    });
    bar.finish_and_clear();
    match out {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
