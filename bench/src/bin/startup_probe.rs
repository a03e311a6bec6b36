//! `startup-probe`: time from exec to the first successful request.
//!
//! Runs the given command (a gcd or api started with `--listen
//! 127.0.0.1:0`), reads the listening address from its start log line, and
//! retries one request (a gRPC `Compute` or an HTTP `GET /gcd/12/18`) until
//! it succeeds. Repeats `--runs` times and prints the medians; the last line
//! is `key=value` pairs for scripts.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, ExitCode, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use argh::FromArgs;
use gcd_proto::{GcdRequest, gcd_service_client::GcdServiceClient};
use loadgen::{listen_addr, median};
use tonic::transport::Endpoint;

/// Measures start-up time: from exec of COMMAND to its first successful
/// request. COMMAND must log its address as addr=HOST:PORT on stdout (gcd
/// and api do). Example: startup-probe --protocol grpc -- target/release/gcd
/// --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
#[derive(FromArgs, Debug)]
struct Args {
    /// what to ask: grpc (a Compute call) or http (GET /gcd/12/18) [default grpc]
    #[argh(option, default = "String::from(\"grpc\")")]
    protocol: String,

    /// how many times to start the command [default 5]
    #[argh(option, default = "5")]
    runs: usize,

    /// give up on one start after this many milliseconds [default 10000]
    #[argh(option, default = "10_000")]
    timeout_ms: u64,

    /// the command to start, after --
    #[argh(positional, greedy)]
    command: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    Http,
}

struct Timing {
    listening: Duration,
    first_ok: Duration,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let protocol = match args.protocol.as_str() {
        "grpc" => Protocol::Grpc,
        "http" => Protocol::Http,
        other => {
            eprintln!("startup-probe: --protocol must be grpc or http, not {other:?}");
            return ExitCode::from(2);
        }
    };
    if args.command.is_empty() || args.runs == 0 {
        eprintln!("startup-probe: give a command after -- and --runs of at least 1");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("startup-probe: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut listening = Vec::with_capacity(args.runs);
    let mut first_ok = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        match start_once(&args.command, protocol, timeout, &runtime) {
            Ok(timing) => {
                let (l, f) = (millis(timing.listening), millis(timing.first_ok));
                println!("run {run}: listening after {l:.2} ms, first success after {f:.2} ms");
                listening.push(l);
                first_ok.push(f);
            }
            Err(err) => {
                eprintln!("startup-probe: run {run}: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let listening = median(&mut listening).unwrap_or(0.0);
    let first_ok = median(&mut first_ok).unwrap_or(0.0);
    println!(
        "startup-probe: runs={} listening_ms={listening:.2} first_ok_ms={first_ok:.2}",
        args.runs
    );
    ExitCode::SUCCESS
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn start_once(
    command: &[String],
    protocol: Protocol,
    timeout: Duration,
    runtime: &tokio::runtime::Runtime,
) -> Result<Timing, String> {
    let started = Instant::now();
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", command[0]))?;
    let stdout = child.stdout.take();
    let (found, address) = mpsc::channel();
    // Reads the whole log so the child never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        let mut found = Some(found);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = listen_addr(&line)
                && let Some(found) = found.take()
            {
                let _ = found.send((addr, started.elapsed()));
            }
        }
    });

    let result = (|| {
        let (addr, listening) = address
            .recv_timeout(timeout)
            .map_err(|_| format!("no addr= log line within {timeout:?}"))?;
        let deadline = started + timeout;
        loop {
            let ok = match protocol {
                Protocol::Http => http_ok(addr),
                Protocol::Grpc => runtime.block_on(grpc_ok(addr)),
            };
            if ok {
                return Ok(Timing {
                    listening,
                    first_ok: started.elapsed(),
                });
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no successful request to {addr} within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    })();

    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    result
}

/// One `GET /gcd/12/18` on a fresh connection; true on a 200 with the
/// right answer.
fn http_ok(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_nodelay(true)?;
        stream.write_all(
            b"GET /gcd/12/18 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.starts_with("HTTP/1.1 200") && response.ends_with("{\"result\":\"6\"}"))
    };
    attempt().unwrap_or(false)
}

/// One `Compute(12, 18)` on a fresh connection; true when it answers 6.
async fn grpc_ok(addr: SocketAddr) -> bool {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let mut client = GcdServiceClient::new(channel);
    matches!(
        client.compute(GcdRequest { a: 12, b: 18 }).await,
        Ok(response) if response.get_ref().result == 6
    )
}
