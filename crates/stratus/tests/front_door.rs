//! The front door, tried as a hostile client would: reserved database names, repeated wrong
//! passwords, and the names on the certificate clients verify.

mod common;

use common::Stratus;

#[test]
fn reserved_database_names_are_refused() {
    let mut s = Stratus::new("reserved");
    s.start();
    for name in ["mysql", "template", "sys", "tls"] {
        let err = s.fails(&["db", "create", name]);
        assert!(
            err.contains(&format!("database name \"{name}\" is reserved")),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    // The API answers a JSON error with the same message.
    let out = s.cli(&["db", "create", "mysql", "--json"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is reserved"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        s.json(&["db", "list"]).as_array().unwrap().is_empty(),
        "nothing half-made"
    );
    // `test` is an ordinary name: each database has a server of its own.
    s.json(&["db", "create", "test"]);
    s.stop();
}
