//! Progress bars of the command line: on stderr, hidden when stderr is not a terminal (indicatif's default), so
//! scripts and tests see only the results on stdout. Sizes and rates are decimal (kB, MB, MB/s: 10^6 bytes), the
//! unit of `--max-rate`; a bar appears once its total is known (never `0 B/1 B`).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use backset_copier::JobControl;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often a bar is refreshed from the job it follows.
pub const REFRESH: Duration = Duration::from_millis(100);

/// The bar's line: decimal sizes and the rate in MB/s whatever its size (`12.5 MB/104.9 MB 48.20 MB/s`).
pub const TEMPLATE: &str = "{prefix:>11} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {mb_per_sec} {msg}";

/// `{mb_per_sec}`: the bar's rate in MB/s (10^6 bytes), two decimals.
fn mb_per_sec(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.2} MB/s", state.per_sec() / 1e6);
}

/// A byte progress bar labelled `what`, not drawn until [`update`] gives it a total.
pub fn bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    let style = ProgressStyle::with_template(TEMPLATE)
        .expect("a valid template")
        .with_key("mb_per_sec", mb_per_sec)
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_string());
    bar
}

/// Shows `done` of `total` bytes. Until the total is known (0: nothing listed yet) the bar stays undrawn; then it is
/// drawn on stderr (when stderr is a terminal).
pub fn update(bar: &ProgressBar, done: u64, total: u64) {
    if total == 0 {
        return;
    }
    let first = bar.length().is_none();
    bar.set_length(total);
    bar.set_position(done);
    if first {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
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
            update(&bar, p.bytes_done, p.bytes_total);
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
