//! Text output for people: aligned tables, sizes, and a spinner for long work.

use std::time::Duration;

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `4.0 GiB`, `512 MiB`.
pub fn bytes(n: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let f = n as f64;
    if f >= GIB {
        format!("{:.1} GiB", f / GIB)
    } else {
        format!("{:.0} MiB", f / MIB)
    }
}

/// A spinner on stderr while `fut` runs; invisible when stderr is not a terminal.
pub async fn with_spinner<T>(message: String, fut: impl std::future::Future<Output = T>) -> T {
    with_progress(message, fut, || std::future::ready(None)).await
}

/// [`with_spinner`] whose message follows the work: every half second `status` is asked for a
/// new one (`None` keeps the last).
pub async fn with_progress<T, S>(
    message: String,
    fut: impl std::future::Future<Output = T>,
    mut status: impl FnMut() -> S,
) -> T
where
    S: std::future::Future<Output = Option<String>>,
{
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let out = loop {
        tokio::select! {
            out = &mut fut => break out,
            _ = tick.tick() => {
                if let Some(m) = status().await {
                    bar.set_message(m);
                }
            }
        }
    };
    bar.finish_and_clear();
    out
}

/// One line for a move under way: `to n2: catch-up for 4 s, 2 s behind`.
pub fn move_progress(p: &stratus_control::migrate::MoveProgress, now_ms: i64) -> String {
    let secs = (now_ms - p.since_ms).max(0) / 1000;
    let behind = p
        .behind_secs
        .map_or(String::new(), |b| format!(", {b} s behind"));
    if p.to.is_empty() {
        format!("{} for {secs} s", p.phase)
    } else {
        format!("to {}: {} for {secs} s{behind}", p.to, p.phase)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::bytes(4 << 30), "4.0 GiB");
        assert_eq!(super::bytes(512 << 20), "512 MiB");
    }

    #[test]
    fn moves_under_way() {
        let mut p = stratus_control::migrate::MoveProgress {
            to: String::new(),
            phase: "starting".into(),
            since_ms: 10_000,
            behind_secs: None,
        };
        assert_eq!(super::move_progress(&p, 12_500), "starting for 2 s");
        p.to = "n2".into();
        p.phase = "catch-up".into();
        p.behind_secs = Some(3);
        assert_eq!(
            super::move_progress(&p, 14_000),
            "to n2: catch-up for 4 s, 3 s behind"
        );
        // A clock that went back says 0 s, never a negative time.
        assert_eq!(
            super::move_progress(&p, 0),
            "to n2: catch-up for 0 s, 3 s behind"
        );
    }
}
