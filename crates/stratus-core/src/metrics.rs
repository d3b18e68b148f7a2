//! Prometheus text exposition (<https://prometheus.io/docs/instrumenting/exposition_formats/>):
//! what every producer of `/metrics` text writes the same way.

use std::fmt::Write;

/// The `# HELP` and `# TYPE` lines that open a metric family.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_lines() {
        let mut out = String::new();
        super::header(&mut out, "x_total", "counter", "Things.");
        assert_eq!(out, "# HELP x_total Things.\n# TYPE x_total counter\n");
    }
}
