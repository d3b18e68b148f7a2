//! The CLI as a person at a terminal uses it: `stratus connect` through a pseudo-terminal, with
//! the credential file `db create --save-credentials` wrote and typing the password when asked;
//! `db show --watch` following a database as it changes.

mod common;

use common::{BIN, Stratus};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A program on the slave side of a pseudo-terminal, its controlling terminal (through
/// util-linux's `setsid --ctty`: this workspace has no unsafe code for a `pre_exec`); the test
/// reads and types on the master side.
struct Pty {
    master: std::fs::File,
    seen: Arc<Mutex<String>>,
    child: Child,
}

impl Pty {
    fn spawn(program: Command) -> Self {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        let mut cmd = Command::new("setsid");
        cmd.args(["--ctty", "--wait"])
            .arg(program.get_program())
            .args(program.get_args())
            .envs(program.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn().unwrap();
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(String::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the program and its terminal are gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            master,
            seen,
            child,
        }
    }

    /// Waits until the screen shows `text` (bounded).
    fn expect(&self, text: &str) {
        let begin = Instant::now();
        while !self.seen.lock().unwrap().contains(text) {
            assert!(
                begin.elapsed() < Duration::from_secs(30),
                "never saw {text:?}; the screen:\n{}",
                self.seen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
    }

    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let screen = self.seen.lock().unwrap().clone();
        (status, screen)
    }
}

fn connect(s: &Stratus, config: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--api", &s.api, "connect"])
        .args(args)
        .env("STRATUS_TOKEN", s.admin_token())
        .env("XDG_CONFIG_HOME", config)
        .env("HOME", config);
    cmd
}

#[test]
fn connect_opens_the_client_with_saved_credentials_or_asking_for_the_password() {
    let mut s = Stratus::new("connect");
    s.start();
    let config = tempfile::tempdir().unwrap();
    let created = Command::new(BIN)
        .args([
            "--api",
            &s.api,
            "db",
            "create",
            "shop",
            "--save-credentials",
        ])
        .env("STRATUS_TOKEN", s.admin_token())
        .env("XDG_CONFIG_HOME", config.path())
        .output()
        .unwrap();
    let told = String::from_utf8_lossy(&created.stdout);
    assert!(
        created.status.success() && told.contains("stratus connect shop"),
        "{told}"
    );
    let file = config.path().join("stratus/credentials/shop.admin.cnf");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A personal ~/.my.cnf for some other server must not override the saved file.
    std::fs::write(
        config.path().join(".my.cnf"),
        "[client]\nuser = somebody-else\npassword = not-this-one\nhost = 192.0.2.1\n",
    )
    .unwrap();
    // With the saved credentials: straight to the prompt.
    let mut pty = Pty::spawn(connect(&s, config.path(), &["shop"]));
    pty.expect("MariaDB [shop]>");
    pty.type_line("SELECT 6 * 7 AS answer;");
    pty.expect("| answer |");
    pty.expect("|     42 |");
    pty.type_line("exit");
    let (status, screen) = pty.finish();
    assert!(status.success(), "{screen}");
    assert!(!screen.contains("Enter password"), "{screen}");

    // Another user, no file: the client asks, the password is typed on the terminal.
    let u = s.json(&[
        "user",
        "create",
        "shop",
        "app",
        "--password",
        "Typed-at-a-prompt-1",
    ]);
    assert_eq!(u["user"], "shop.app");
    let mut pty = Pty::spawn(connect(&s, config.path(), &["shop", "--user", "app"]));
    pty.expect("Enter password:");
    pty.type_line("Typed-at-a-prompt-1");
    pty.expect("MariaDB [shop]>");
    pty.type_line("SELECT CONCAT('logged in as ', USER()) AS who;");
    pty.expect("logged in as ");
    pty.expect("app@");
    pty.type_line("exit");
    let (status, screen) = pty.finish();
    assert!(status.success(), "{screen}");
    assert!(
        !screen.contains("Typed-at-a-prompt-1"),
        "the password is not echoed: {screen}"
    );

    // A credential file others can read is refused, in one line.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = connect(&s, config.path(), &["shop"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("chmod 600"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    s.stop();
}

#[test]
fn db_show_watch_follows_the_database_until_stopped() {
    use std::io::BufRead;
    let mut s = Stratus::new("watch");
    s.start();
    s.json(&["db", "create", "shop"]);
    let mut child = Command::new(BIN)
        .args([
            "--api",
            &s.api,
            "--json",
            "db",
            "show",
            "shop",
            "--watch",
            "--interval",
            "0.2",
        ])
        .env("STRATUS_TOKEN", s.admin_token())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || -> serde_json::Value {
        serde_json::from_str(&lines.next().expect("a refresh").unwrap()).unwrap()
    };
    assert_eq!(next()["scu"], 1);
    s.json(&["db", "scale", "shop", "--scu", "2"]);
    // Each line is a fresh look: the new size shows up within a few refreshes.
    let begin = Instant::now();
    while next()["scu"] != 2 {
        assert!(
            begin.elapsed() < Duration::from_secs(10),
            "the watch never saw the new size"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let bad = s.fails(&["db", "show", "shop", "--watch", "--interval", "0"]);
    assert!(bad.contains("--interval"), "{bad}");
    s.stop();
}
