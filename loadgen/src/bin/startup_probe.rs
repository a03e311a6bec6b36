//! `startup-probe`: time from exec to the first successful request.
//!
//! Runs the given command (a gcd or api, ours or another build of the same
//! contract) at an address it was told through its environment
//! (`GCD_LISTEN`, `API_LISTEN`), which the probe inherits and passes on.
//! Nothing is read from the command's output, so a build that prints
//! nothing is timed as well: the probe connects to `--addr` and retries one
//! request (a gRPC `Compute` or an HTTP `GET /gcd/12/18`) until it
//! succeeds. Repeats `--runs` times and prints the medians; the last line
//! is `key=value` pairs for scripts.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use argh::FromArgs;
use gcd_proto::{GcdRequest, gcd_service_client::GcdServiceClient};
use loadgen::median;
use tonic::transport::Endpoint;

/// Measures start-up time: from exec of COMMAND to its first successful
/// request at --addr. COMMAND takes that address from the environment, set
/// by the caller. Example: GCD_LISTEN=127.0.0.1:3100
/// GCD_ADMIN_LISTEN=127.0.0.1:3101 startup-probe --protocol grpc --addr
/// 127.0.0.1:3100 -- target/release/gcd
#[derive(FromArgs, Debug)]
struct Args {
    /// what to ask: grpc (a Compute call) or http (GET /gcd/12/18) [default grpc]
    #[argh(option, default = "String::from(\"grpc\")")]
    protocol: String,

    /// the address COMMAND listens on, as its environment tells it
    #[argh(option)]
    addr: SocketAddr,

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
        match start_once(&args.command, args.addr, protocol, timeout, &runtime) {
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
    addr: SocketAddr,
    protocol: Protocol,
    timeout: Duration,
    runtime: &tokio::runtime::Runtime,
) -> Result<Timing, String> {
    let started = Instant::now();
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", command[0]))?;
    let result = first_success(&mut child, addr, protocol, started + timeout, runtime);
    let _ = child.kill();
    let _ = child.wait();
    result.map(|listening| Timing {
        listening: listening - started,
        first_ok: started.elapsed(),
    })
}

/// Polls `addr` until a connection opens (returned: when it first did)
/// and then a request succeeds; an error once `child` exits or the
/// deadline passes.
fn first_success(
    child: &mut Child,
    addr: SocketAddr,
    protocol: Protocol,
    deadline: Instant,
    runtime: &tokio::runtime::Runtime,
) -> Result<Instant, String> {
    let mut listening = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the command exited ({status}) before answering at {addr}"
            ));
        }
        if listening.is_none()
            && TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        {
            listening = Some(Instant::now());
        }
        if let Some(listening) = listening {
            let ok = match protocol {
                Protocol::Http => http_ok(addr),
                Protocol::Grpc => runtime.block_on(grpc_ok(addr)),
            };
            if ok {
                return Ok(listening);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no successful request to {addr} in time"));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
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
