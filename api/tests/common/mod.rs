//! Shared by the integration tests that run the api library in-process
//! with a resolver the test controls, as a headless Service's DNS would
//! answer. Each test binary uses a part of it.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use api::{
    Server,
    config::{COMMAND, Config},
    resolve::{Resolution, Resolve, Target},
};

/// The one name the in-process api is given.
pub const SERVICE: &str = "gcd-service:3000";

/// A resolver the test controls: one name, whatever addresses it is told.
#[derive(Default)]
pub struct ScriptedResolver {
    answer: Mutex<Vec<SocketAddr>>,
}

impl ScriptedResolver {
    pub fn answer(&self, addrs: &[SocketAddr]) {
        *self.answer.lock().unwrap() = addrs.to_vec();
    }
}

impl Resolve for ScriptedResolver {
    fn resolve<'a>(&'a self, target: &'a Target) -> Resolution<'a> {
        assert_eq!(target.to_string(), SERVICE);
        let addrs = self.answer.lock().unwrap().clone();
        Box::pin(async move { Ok(addrs) })
    }
}

/// The api library serving on ephemeral loopback ports, resolving
/// [`SERVICE`] through `resolver` every `resolve_interval_ms`.
pub struct InProcessApi {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    lifecycle: runtime::Lifecycle,
    running: tokio::task::JoinHandle<Result<(), api::ServerError>>,
    runtime: tokio::runtime::Runtime,
}

impl InProcessApi {
    pub fn start(resolver: Arc<ScriptedResolver>, resolve_interval_ms: u64) -> Self {
        let interval = resolve_interval_ms.to_string();
        let args = ["--resolve-interval-ms", interval.as_str()];
        Self::start_routes(resolver, &args, api::routes::gcd_routes)
    }

    /// An api with the flags `args` (its ports and target set here)
    /// serving the routes `routes` builds.
    pub fn start_routes(
        resolver: Arc<ScriptedResolver>,
        args: &[&str],
        routes: fn(api::routes::AppState) -> api::routes::Routes,
    ) -> Self {
        let mut args = args.to_vec();
        args.extend([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--gcd",
            SERVICE,
        ]);
        let args = runtime::config::Args::parse(&COMMAND, "api", &args).unwrap();
        let config = Config::from_args(&args, 1 << 20).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let lifecycle = runtime::Lifecycle::new();
        let server = runtime
            .block_on(Server::bind_with_resolver(config, resolver))
            .unwrap();
        let (addr, admin_addr) = (server.public_addr(), server.admin_addr());
        let running = runtime.spawn(server.run_routes(lifecycle.clone(), routes));
        Self {
            addr,
            admin_addr,
            lifecycle,
            running,
            runtime,
        }
    }

    /// Stops the api as SIGTERM would and waits for a clean exit.
    pub fn stop(self) {
        self.lifecycle.advance(runtime::Phase::Stopping);
        self.runtime.block_on(self.running).unwrap().unwrap();
    }
}
