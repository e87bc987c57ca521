//! Test-only pause points, so a crash test can SIGKILL the server at moments too short to hit by polling.
//!
//! `BACKSET_FAULT_PAUSE=<point>` (read once, at the first hot copy of the process) makes every hot copy job that
//! reaches `<point>` block there; with `BACKSET_FAULT_PAUSE_MARK=<file>` it first writes `<file>` (holding the hot
//! copy id and the point) so the test knows the job is there. Points:
//! - `begun`: stage 1 done (journal pinned, set initialised or element begun in `tmp/`, or the `.incomplete`
//!   directories of a simple hot copy created), before any atom or journal is copied;
//! - `before-move`: everything copied and durable, control files written, just before the element (or the simple
//!   copy) is moved into place;
//! - `mid-move`: a backup set element renamed from `tmp/<id>` to its name but the state not yet saying it is
//!   completed; a simple hot copy with a separate journal directory whose journal directory is renamed but the
//!   archive directory not yet.
//!
//! A job blocked at `begun` or `before-move` still ends on a cancel; at `mid-move` it blocks until the process dies.
//! Never set these variables outside tests.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use uuid::Uuid;

use crate::hotcopy::HotCopyError;

/// The environment variable naming the pause point.
pub const FAULT_PAUSE_ENV: &str = "BACKSET_FAULT_PAUSE";
/// The environment variable naming the file written when a job blocks.
pub const FAULT_PAUSE_MARK_ENV: &str = "BACKSET_FAULT_PAUSE_MARK";

/// The pause points, in the order a job reaches them.
pub const FAULT_POINTS: [&str; 3] = ["begun", "before-move", "mid-move"];

struct Pause {
    point: String,
    mark: Option<PathBuf>,
}

fn config() -> Option<&'static Pause> {
    static CONFIG: OnceLock<Option<Pause>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let point = std::env::var(FAULT_PAUSE_ENV).ok().filter(|p| !p.is_empty())?;
            if !FAULT_POINTS.contains(&point.as_str()) {
                tracing::warn!(%point, "{FAULT_PAUSE_ENV} names no pause point (begun, before-move, mid-move); ignored");
                return None;
            }
            Some(Pause { point, mark: std::env::var_os(FAULT_PAUSE_MARK_ENV).map(PathBuf::from) })
        })
        .as_ref()
}

/// Blocks at `point` when the test-only pause names it: until `check` fails (a cancel), or with `check` `None`
/// until the process dies.
pub(crate) fn pause(
    point: &str,
    id: Uuid,
    check: Option<&dyn Fn() -> Result<(), HotCopyError>>,
) -> Result<(), HotCopyError> {
    let Some(p) = config().filter(|p| p.point == point) else { return Ok(()) };
    eprintln!("backset: test-only {FAULT_PAUSE_ENV}: hot copy {id} blocks at {point}");
    if let Some(mark) = &p.mark {
        if let Err(e) = std::fs::write(mark, format!("{id} {point}\n")) {
            eprintln!("backset: test-only {FAULT_PAUSE_ENV}: cannot write the mark {}: {e}", mark.display());
        }
    }
    loop {
        if let Some(check) = check {
            check()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
