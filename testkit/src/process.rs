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

/// How a binary is started: as it is, or by a `sh` script that sets up
/// its process first, the way a wrapper or an init script does.
#[derive(Debug, Clone, Copy)]
pub enum Launch<'a> {
    Direct,
    /// A `sh -c` script that ends by running the binary with its
    /// arguments: `exec "$0" "$@"`.
    Shell(&'a str),
}

/// A process allowed 64 file descriptors at most (soft and hard limits).
pub const WITH_64_OPEN_FILES: Launch<'static> = Launch::Shell(r#"ulimit -n 64 && exec "$0" "$@""#);

/// A process started with SIGHUP ignored, as `nohup` starts it.
pub const NOHUP: Launch<'static> = Launch::Shell(r#"trap '' HUP && exec "$0" "$@""#);

impl Launch<'_> {
    fn command(self, name: &str) -> Command {
        match self {
            Self::Direct => Command::new(binary(name)),
            Self::Shell(script) => {
                // An absolute path: the child's environment is cleared.
                let mut command = Command::new("/bin/sh");
                command.arg("-c").arg(script).arg(binary(name));
                command
            }
        }
    }
}

impl Service {
    /// Starts `name` with `args` and waits for its "listening" log line.
    pub fn start(name: &str, args: &[&str]) -> Self {
        Self::launch(Launch::Direct, name, args)
    }

    /// [`Service::start`], launched as `launch` says.
    pub fn launch(launch: Launch<'_>, name: &str, args: &[&str]) -> Self {
        let mut child = launch
            .command(name)
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
    launch_to_exit(Launch::Direct, name, args, env)
}

/// [`run_to_exit`], launched as `launch` says.
pub fn launch_to_exit(
    launch: Launch<'_>,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut child = launch
        .command(name)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {name}: {err}"));
    let read_all = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    // A process that should have exited but serves instead is a failure,
    // not a test that never ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!(
        "{}{}",
        stdout.join().expect("stdout reader"),
        stderr.join().expect("stderr reader")
    );
    (status.code(), text)
}

/// Asserts that `name`, allowed 64 file descriptors, refuses to start or
/// to call its configuration valid (exit 2), saying that the limit leaves
/// room for no client connection and that it needs `floor`.
pub fn assert_64_open_files_are_refused(name: &str, floor: u64) {
    for args in [&[][..], &["--check-config"]] {
        let (code, text) = launch_to_exit(WITH_64_OPEN_FILES, name, args, &[]);
        assert_eq!(code, Some(2), "{name} {args:?}: {text}");
        assert!(
            text.contains(
                "the open-file limit is invalid: 64 file descriptors leave room for 0 client \
                 connections"
            ),
            "{name} {args:?}: {text}"
        );
        assert!(
            text.contains(&format!("raise it to at least {floor}")),
            "{name} {args:?}: {text}"
        );
    }
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
