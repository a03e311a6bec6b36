//! `grpc-load`: direct gRPC load against one gcd.
//!
//! Keeps `--concurrency` `Compute` calls in flight, spread round-robin over
//! `--connections` HTTP/2 connections, for `--duration` seconds or
//! `--requests` calls, then prints req/s and latency percentiles. The last
//! line is `key=value` pairs for scripts.

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use argh::FromArgs;
use gcd_proto::{GcdRequest, gcd_service_client::GcdServiceClient};
use loadgen::Latencies;
use tonic::transport::{Channel, Endpoint};

/// Direct gRPC load against one gcd (pb.GCDService/Compute). Prints
/// requests per second and latency percentiles; the last line is key=value
/// pairs for scripts.
#[derive(FromArgs, Debug)]
struct Args {
    /// gcd gRPC address [default 127.0.0.1:3000]
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 3000))")]
    target: SocketAddr,

    /// calls in flight at once [default 32]
    #[argh(option, default = "32")]
    concurrency: usize,

    /// HTTP/2 connections; calls are spread over them [default 1]
    #[argh(option, default = "1")]
    connections: usize,

    /// seconds to measure for, unless --requests is given [default 10]
    #[argh(option, default = "10.0")]
    duration: f64,

    /// stop after this many calls instead of after --duration
    #[argh(option)]
    requests: Option<u64>,

    /// calls made before measuring, to open connections [default 2000]
    #[argh(option, default = "2000")]
    warmup: u64,

    /// client worker threads (Tokio; 1 runs on the calling thread) [default 1]
    #[argh(option, default = "1")]
    threads: usize,
}

/// When the measured run ends.
enum Budget {
    Until(Instant),
    Calls(AtomicU64),
}

impl Budget {
    /// Takes one call from the budget; false once it is spent.
    fn take(&self) -> bool {
        match self {
            Self::Until(deadline) => Instant::now() < *deadline,
            Self::Calls(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

struct Outcome {
    latencies: Latencies,
    errors: u64,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if args.concurrency == 0 || args.connections == 0 || args.threads == 0 {
        eprintln!("grpc-load: --concurrency, --connections and --threads must be at least 1");
        return ExitCode::from(2);
    }
    if !(args.duration.is_finite() && args.duration > 0.0) {
        eprintln!("grpc-load: --duration must be a positive number of seconds");
        return ExitCode::from(2);
    }
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("grpc-load: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("grpc-load: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("http://{}", args.target))
        .map_err(|err| format!("bad target {}: {err}", args.target))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2));
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let channel: Channel = endpoint
            .connect()
            .await
            .map_err(|err| format!("cannot connect to {}: {err}", args.target))?;
        clients.push(GcdServiceClient::new(channel));
    }

    // Warm-up: same shape as the measured run, results discarded.
    if args.warmup > 0 {
        let warmup = Arc::new(Budget::Calls(AtomicU64::new(args.warmup)));
        let outcome = drive(&clients, args.concurrency, warmup).await;
        if outcome.latencies.is_empty() {
            return Err(format!(
                "every warm-up call to {} failed ({} errors)",
                args.target, outcome.errors
            ));
        }
    }

    let budget = Arc::new(match args.requests {
        Some(calls) => Budget::Calls(AtomicU64::new(calls)),
        None => Budget::Until(Instant::now() + Duration::from_secs_f64(args.duration)),
    });
    let started = Instant::now();
    let outcome = drive(&clients, args.concurrency, budget).await;
    let elapsed = started.elapsed().as_secs_f64();

    let ok = outcome.latencies.len() as u64;
    let summary = outcome.latencies.summarise();
    let rps = ok as f64 / elapsed;
    println!(
        "{} calls in {elapsed:.2}s to {} ({} connection(s), {} in flight), {} errors",
        ok, args.target, args.connections, args.concurrency, outcome.errors
    );
    println!(
        "  {rps:.0} req/s; latency p50 {} us, p90 {} us, p99 {} us, max {} us, mean {:.0} us",
        summary.percentile(50.0),
        summary.percentile(90.0),
        summary.percentile(99.0),
        summary.max(),
        summary.mean()
    );
    println!(
        "grpc-load: requests={ok} errors={} seconds={elapsed:.3} rps={rps:.1} p50_us={} p90_us={} p99_us={} max_us={}",
        outcome.errors,
        summary.percentile(50.0),
        summary.percentile(90.0),
        summary.percentile(99.0),
        summary.max()
    );
    if ok == 0 {
        return Err("no call succeeded".into());
    }
    Ok(())
}

/// Runs `concurrency` call loops until `budget` is spent; loop `i` uses
/// connection `i % clients.len()`.
async fn drive(
    clients: &[GcdServiceClient<Channel>],
    concurrency: usize,
    budget: Arc<Budget>,
) -> Outcome {
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let client = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(call_loop(client, budget.clone())));
    }
    let mut total = Outcome {
        latencies: Latencies::default(),
        errors: 0,
    };
    for task in tasks {
        match task.await {
            Ok(outcome) => {
                total.latencies.merge(outcome.latencies);
                total.errors += outcome.errors;
            }
            Err(err) => {
                eprintln!("grpc-load: a call loop failed: {err}");
                total.errors += 1;
            }
        }
    }
    total
}

async fn call_loop(mut client: GcdServiceClient<Channel>, budget: Arc<Budget>) -> Outcome {
    let mut latencies = Latencies::with_capacity(64 * 1024);
    let mut errors = 0;
    let mut n: u64 = 0;
    while budget.take() {
        n += 1;
        // Vary the operands a little; the answer is known: gcd(6k, 4k) = 2k.
        let k = n % 1000 + 1;
        let request = GcdRequest { a: 6 * k, b: 4 * k };
        let started = Instant::now();
        match client.compute(request).await {
            Ok(response) if response.get_ref().result == 2 * k => {
                latencies.record(started.elapsed())
            }
            Ok(_) | Err(_) => errors += 1,
        }
    }
    Outcome { latencies, errors }
}
