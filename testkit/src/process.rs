//! The real binaries, started the way a user starts them.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use crate::{eventually, http};

/// Path of a workspace binary, next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe
        .parent()
        .expect("test executable directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run the tests with `cargo test --workspace` so every binary is built",
        path.display()
    );
    path
}

/// A running `gcd` or `api`, killed when dropped.
pub struct Service {
    child: Child,
    /// The main port: gRPC for gcd, public HTTP for api.
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Service {
    /// Starts `name` with `args` and waits for its "listening" log line.
    pub fn start(name: &str, args: &[&str]) -> Self {
        let mut child = Command::new(binary(name))
            .args(args)
            .env_clear()
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name}: {err}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::new(Mutex::new(String::new()));
        let (listening, addrs) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let (Some(addr), Some(admin)) =
                    (field(&line, "addr"), field(&line, "admin_addr"))
                {
                    let _ = listening.send((addr, admin));
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (addr, admin_addr) = addrs
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "{name} did not report its addresses (exit status {:?}); log:\n{}",
                    child.try_wait(),
                    log.lock().unwrap()
                )
            });
        Self {
            child,
            addr,
            admin_addr,
            log,
        }
    }

    /// A gcd on ephemeral loopback ports (or `listen`, to come back on a
    /// known address) with no shutdown delay; `extra` flags override these.
    pub fn gcd(listen: Option<SocketAddr>, extra: &[&str]) -> Self {
        let listen = listen.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        let defaults = [
            ("--listen", listen.as_str()),
            ("--admin-listen", "127.0.0.1:0"),
            ("--shutdown-delay-ms", "0"),
        ];
        Self::start("gcd", &with_defaults(&defaults, extra))
    }

    /// An api on ephemeral loopback ports in front of `gcd` (a `--gcd`
    /// list), with a short resolve interval and no shutdown delay; `extra`
    /// flags override these.
    pub fn api(gcd: &str, extra: &[&str]) -> Self {
        let defaults = [
            ("--listen", "127.0.0.1:0"),
            ("--admin-listen", "127.0.0.1:0"),
            ("--gcd", gcd),
            ("--resolve-interval-ms", "100"),
            ("--shutdown-delay-ms", "0"),
        ];
        Self::start("api", &with_defaults(&defaults, extra))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `KILL`, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the process to exit, at most `bound`.
    pub fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually("the process to exit", bound, || {
            child.try_wait().expect("try_wait")
        })
    }

    /// Current value of an unlabelled metric on the admin port.
    pub fn metric(&self, name: &str) -> u64 {
        let text = http::get(self.admin_addr, "/metrics").body;
        metric_value(&text, name).unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `name` with `args` and `env` (nothing else in its environment)
/// until it exits, for flags that exit at once (`--help`,
/// `--check-config`, bad configuration); returns its exit code and
/// everything it printed.
pub fn run_to_exit(name: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(binary(name))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {name}: {err}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// The value of the sample named exactly `series` (name plus labels, as
/// written) in a Prometheus text document.
pub fn metric_value(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// `extra`, preceded by each default flag that `extra` does not set.
fn with_defaults<'a>(defaults: &[(&'a str, &'a str)], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&str> = defaults
        .iter()
        .filter(|(flag, _)| !extra.contains(flag))
        .flat_map(|(flag, value)| [*flag, *value])
        .collect();
    args.extend_from_slice(extra);
    args
}

/// `key=value` from a log line.
fn field(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}
