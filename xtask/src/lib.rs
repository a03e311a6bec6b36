//! Build tasks for pi-gcd, run as `cargo xtask <task>` (an alias in
//! `.cargo/config.toml`). Std only, so it builds wherever cargo does and
//! behaves the same on Linux (GNU tools) and macOS (BSD tools): nothing here
//! calls `date`, `stat`, `touch` or `sed`.
//!
//! Two tasks: `build-arm`, the logic of `scripts/build-arm.sh`, and
//! `render-manifests` ([`render`]), that of `scripts/render-manifests.sh`.
//! Everything but running commands is a plain function, so route choice,
//! command lines and the rendered manifests are unit tested:
//!
//! - [`options`]: flags and environment -> [`options::Options`];
//! - [`meta`]: version, git revision and dates stamped into the images;
//! - [`machine`]: which tools this machine has (the only probing);
//! - [`cache`]: each clone's own directory in the shared build cache;
//! - [`route`]: which route fits, and why;
//! - [`plan`]: every step of the chosen route, as data;
//! - [`exec`]: runs the steps, or prints them for `--dry-run`;
//! - [`render`]: `k8s/` rewritten for a registry.

pub mod cache;
pub mod error;
pub mod exec;
pub mod machine;
pub mod meta;
pub mod options;
pub mod plan;
pub mod render;
pub mod route;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

pub use error::Error;
use options::{Options, Parsed};

const USAGE: &str = "usage: cargo xtask build-arm [options]          (see build-arm --help)
       cargo xtask render-manifests [options]   (see render-manifests --help)";

/// Runs the task named by `args[0]` and maps the outcome to an exit code:
/// 0 done, 1 failed, 2 bad usage.
pub fn main(args: Vec<String>) -> ExitCode {
    let mut args = args.into_iter();
    let outcome = match args.next().as_deref() {
        Some("build-arm") => {
            let env = |name: &str| std::env::var(name).ok();
            options::parse(args, &env).and_then(|parsed| match parsed {
                Parsed::Help => {
                    print!("{}", options::HELP);
                    Ok(())
                }
                Parsed::Run(opts) => build_arm(&opts, &env),
            })
        }
        Some("render-manifests") => {
            let env = |name: &str| std::env::var(name).ok();
            render::parse(args, &env).and_then(|parsed| match parsed {
                render::ParsedRender::Help => {
                    print!("{}", render::HELP);
                    Ok(())
                }
                render::ParsedRender::Run(opts) => {
                    workspace_root(&env).and_then(|root| render::run(&opts, &root))
                }
            })
        }
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(Error::Usage(format!("unknown task '{other}'; {USAGE}"))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// `build-arm`: probe, choose a route, plan it, run (or print) the plan.
/// The workspace root, whatever directory cargo was run in (`cargo run`
/// tells the xtask its manifest directory), made the current directory:
/// every command and relative path is taken from there. Canonical, as the
/// clone's key in the cache ([`cache::clone_dir`]) needs.
fn workspace_root(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, Error> {
    let root = match env("CARGO_MANIFEST_DIR") {
        Some(dir) => Path::new(&dir)
            .parent()
            .unwrap_or(Path::new(&dir))
            .to_path_buf(),
        None => std::env::current_dir().map_err(|e| Error::io("the current directory", e))?,
    };
    let root = std::fs::canonicalize(&root)
        .map_err(|e| Error::io(format!("resolving {}", root.display()), e))?;
    std::env::set_current_dir(&root)
        .map_err(|e| Error::io(format!("entering {}", root.display()), e))?;
    Ok(root)
}

pub fn build_arm(opts: &Options, env: &dyn Fn(&str) -> Option<String>) -> Result<(), Error> {
    let root = workspace_root(env)?;
    let meta = meta::Meta::read(&root, env)?;
    let machine = machine::Machine::probe(opts, env);
    let choice = route::choose(opts, &machine)?;
    exec::log(&format!(
        "route: {} (images with {}): {}",
        choice.route, choice.image_tool, choice.why
    ));
    if !choice.missing.is_empty() {
        let missing = choice.missing.join("; ");
        if !opts.dry_run {
            return Err(Error::Missing {
                route: choice.route.to_string(),
                missing,
            });
        }
        exec::log(&format!(
            "warning: route {} needs {missing}; a real run stops here",
            choice.route
        ));
    }
    exec::log(&format!(
        "version {}, revision {}, SOURCE_DATE_EPOCH {}{}",
        meta.version,
        meta.revision,
        meta.source_date_epoch,
        if opts.dry_run {
            "; dry run: nothing is run"
        } else {
            ""
        }
    ));
    let ctx = plan::Context {
        opts,
        meta: &meta,
        choice: &choice,
        machine: &machine,
        root: &root,
    };
    if opts.binaries {
        let started = Instant::now();
        exec::run_all(&plan::binaries(&ctx), opts.dry_run)?;
        if !opts.dry_run {
            exec::log(&format!(
                "binaries in {} after {}s:",
                opts.dist.display(),
                started.elapsed().as_secs()
            ));
            for target in &opts.targets {
                for service in options::SERVICES {
                    report_size(&opts.dist.join(target).join(service), "");
                }
            }
        }
    }
    if opts.images {
        let started = Instant::now();
        exec::run_all(&plan::images(&ctx), opts.dry_run)?;
        if !opts.dry_run {
            match &opts.registry {
                Some(registry) => {
                    exec::log(&format!(
                        "pushed after {}s: {registry}/{{gcd,api}}:{} and :{}-{}",
                        started.elapsed().as_secs(),
                        meta.version,
                        meta.version,
                        meta.revision
                    ));
                    exec::log(&format!(
                        "manifests naming them by digest: scripts/render-manifests.sh --registry {registry}"
                    ));
                }
                None => {
                    exec::log(&format!("images after {}s:", started.elapsed().as_secs()));
                    for service in options::SERVICES {
                        let name = format!("{}/{service}:{}", opts.image_namespace, meta.version);
                        report_size(&plan::archive_path(opts, service), &name);
                    }
                    exec::log(
                        "on each node: sudo k3s ctr images import dist/images/gcd.oci.tar (and api.oci.tar)",
                    );
                }
            }
        }
    }
    Ok(())
}

fn report_size(path: &Path, note: &str) {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    eprintln!("    {:<45} {size:>9} bytes  {note}", path.display());
}
