//! Failpoints: named places in long operations (a migration's phases) where a test can act at
//! exactly that moment, e.g. kill a server, as the "Done when" of fault injection asks. With
//! `STRATUS_FAILPOINTS` naming a directory, a test arms point `p` by creating the file `<dir>/p`;
//! reaching an armed point renames it `<dir>/p.reached` and waits until the test deletes that
//! (at most [`LIMIT`]). Unarmed points, and every point without the variable (production), do
//! nothing.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The longest a point waits for its test.
pub const LIMIT: Duration = Duration::from_secs(60);

fn dir() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("STRATUS_FAILPOINTS").map(PathBuf::from))
        .as_ref()
}

/// Point `name` is reached: if a test armed it, waits until the test lets it go on.
pub async fn reached(name: &str) {
    let Some(dir) = dir() else {
        return;
    };
    let reached = dir.join(format!("{name}.reached"));
    if std::fs::rename(dir.join(name), &reached).is_err() {
        return; // not armed
    }
    tracing::info!(
        "failpoint {name} reached; waiting for {} to go",
        reached.display()
    );
    let begin = Instant::now();
    // The test deletes the file when it has acted: a file is all the two processes share.
    while reached.exists() && begin.elapsed() < LIMIT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = std::fs::remove_file(&reached);
}
