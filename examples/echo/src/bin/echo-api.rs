//! The api with `GET /say/{text}`, calling `pb.Echo/Say` on gcd's
//! replicas; otherwise `api`'s own `main`.

use std::process::ExitCode;

use api::{Config, Server};

#[global_allocator]
static ALLOCATOR: runtime::alloc::Allocator = runtime::alloc::Allocator;

fn main() -> ExitCode {
    let args: api::config::Args = match runtime::config::parse_args() {
        Ok(args) => args,
        Err(exit) => return exit,
    };
    telemetry::logging::init();
    let open_files = runtime::budget::raise_open_file_limit();
    let config = match Config::from_args(args, open_files) {
        Ok(config) => config,
        Err(err) => return runtime::process::invalid_config(&err),
    };
    if config.check_only {
        return runtime::process::report_budget("api", &config.budget);
    }
    runtime::process::run("api", config.process, |lifecycle| async move {
        Server::bind(config)
            .await?
            .run_routes(lifecycle, echo::routes_with_say)
            .await
    })
}
