//! Every step of a build as data: the commands with their arguments and
//! environment, the files written and copied. [`crate::exec`] runs them or,
//! for `--dry-run`, prints them; the tests here pin them down.

use std::path::{Path, PathBuf};

use crate::machine::Machine;
use crate::meta::Meta;
use crate::options::{Options, PLATFORMS, SERVICES, TARGETS};
use crate::render::pushed_path;
use crate::route::{Choice, ImageTool, Route};

/// A command line, run from the workspace root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    /// Set on top of the inherited environment.
    pub env: Vec<(String, String)>,
    /// Its standard output is noise (buildah prints image ids).
    pub quiet: bool,
    /// Clean-up whose failure does not matter (removing what may not exist).
    pub may_fail: bool,
    /// What to tell the user if it fails.
    pub hint: Option<String>,
}

impl Cmd {
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Cmd {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            quiet: false,
            may_fail: false,
            hint: None,
        }
    }

    fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    fn may_fail(mut self) -> Self {
        self.may_fail = true;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Log(String),
    Run(Cmd),
    /// Write a file whole (atomically), optionally executable.
    Write {
        path: PathBuf,
        contents: String,
        executable: bool,
    },
    /// Copy a built binary into place with a fixed modification time.
    Stage {
        from: PathBuf,
        to: PathBuf,
        mtime: u64,
    },
    /// Stop unless this file exists.
    Require {
        path: PathBuf,
        hint: String,
    },
    MakeDir(PathBuf),
    RemoveDir(PathBuf),
    /// Remove a file that may not exist.
    RemoveFile(PathBuf),
    /// Read the digest a push wrote to `from` (buildah's `--digestfile`, or
    /// buildx's `--metadata-file` JSON), write `reference@digest` to `to`
    /// for `render-manifests`, and remove `from`.
    RecordDigest {
        from: PathBuf,
        to: PathBuf,
        reference: String,
    },
    /// Move a file, replacing each `(from, to)` string in its text (the
    /// build machine's paths out of an SBOM).
    Rewrite {
        from: PathBuf,
        to: PathBuf,
        replace: Vec<(String, String)>,
    },
    /// Remove `name` from every directory directly under `dir`, where a
    /// tool wrote one per workspace member.
    RemoveFromEach {
        dir: PathBuf,
        name: String,
    },
}

/// What planning reads.
pub struct Context<'a> {
    pub opts: &'a Options,
    pub meta: &'a Meta,
    pub choice: &'a Choice,
    pub machine: &'a Machine,
    /// The workspace root, where every command runs.
    pub root: &'a Path,
}

impl Context<'_> {
    fn target_dir(&self) -> PathBuf {
        match (&self.opts.target_dir, self.choice.route) {
            (Some(dir), _) => dir.clone(),
            (None, Route::Daemonless) => {
                crate::cache::clone_dir(&self.opts.cache, self.root).join("target-musl")
            }
            // cross mounts the workspace into its containers; keep its
            // target directory there.
            (None, Route::Cross) => self.root.join("target"),
        }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Where the archive of a service's images goes when nothing is pushed.
pub fn archive_path(opts: &Options, service: &str) -> PathBuf {
    opts.dist.join("images").join(format!("{service}.oci.tar"))
}

/// Step 1: the static binaries, copied into `dist/<target>/`.
pub fn binaries(ctx: &Context) -> Vec<Step> {
    let target_dir = ctx.target_dir();
    let mut steps = match ctx.choice.route {
        Route::Cross => cross_build(ctx, &target_dir),
        Route::Daemonless => build_std(ctx, &target_dir),
    };
    for target in &ctx.opts.targets {
        for service in SERVICES {
            steps.push(Step::Stage {
                from: target_dir.join(target).join("release").join(service),
                to: ctx.opts.dist.join(target).join(service),
                mtime: ctx.meta.source_date_epoch,
            });
        }
    }
    steps
}

/// The cargo build both routes run (each adds its targets).
const BUILD: [&str; 7] = ["build", "--release", "--locked", "-p", "gcd", "-p", "api"];

/// Where rustc is told to write the build machine's paths it would embed in
/// a binary (panic locations, `file!()` of dependencies), so every builder
/// ships the same bytes: `(from, to)`, for `--remap-path-prefix=from=to`.
/// rustc applies the last prefix that matches, so the broadest comes first.
///
/// The daemonless route compiles in place: the clone, cargo's home (the
/// registry sources), the target directory (build scripts' generated code)
/// and the std sources of `-Z build-std` become `/build`, `/cargo`,
/// `/target` and `/rustc/<commit>`, the prefixes a prebuilt std and
/// cross's containers already use. cross mounts cargo's home at `/cargo`
/// and the target directory at `/target` and links the prebuilt std; only
/// the workspace keeps its host path there.
fn path_remaps(ctx: &Context, target_dir: &Path) -> Vec<(String, String)> {
    let mut remaps = vec![(path(ctx.root), "/build".to_string())];
    if ctx.choice.route == Route::Daemonless {
        if let Some(home) = &ctx.machine.cargo_home {
            remaps.push((path(home), "/cargo".into()));
        }
        remaps.push((path(target_dir), "/target".into()));
        if let Some((src, commit)) = &ctx.machine.std_source {
            remaps.push((path(src), format!("/rustc/{commit}")));
        }
    }
    remaps
}

/// `--config` giving `target`'s rustflags the remaps. Not an environment
/// variable: cargo splits those at whitespace, and a clone's path may hold
/// a space. Config arrays add up, so the rustflags of .cargo/config.toml
/// and of `CARGO_TARGET_<T>_RUSTFLAGS` still apply.
fn remap_config(target: &str, remaps: &[(String, String)]) -> [String; 2] {
    let flags: Vec<String> = remaps
        .iter()
        .map(|(from, to)| toml_string(&format!("--remap-path-prefix={from}={to}")))
        .collect();
    [
        "--config".to_string(),
        format!("target.{target}.rustflags=[{}]", flags.join(", ")),
    ]
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn cross_build(ctx: &Context, target_dir: &Path) -> Vec<Step> {
    let mut steps = Vec::new();
    let remaps = path_remaps(ctx, target_dir);
    for target in &ctx.opts.targets {
        let mut args: Vec<String> = BUILD.map(String::from).to_vec();
        args.extend(["--target".to_string(), target.clone()]);
        args.extend(remap_config(target, &remaps));
        args.extend(ctx.opts.extra_cargo_args.iter().cloned());
        steps.push(Step::Log(format!("cross build --target {target}")));
        steps.push(Step::Run(
            Cmd::new("cross", args).env("CARGO_TARGET_DIR", path(target_dir)),
        ));
    }
    steps
}

/// zig's `-target` for a Rust target, with the CPU rustc's armv7 target
/// assumes (ARMv7-A, VFPv3-D32, Thumb-2, NEON).
pub fn zig_target(rust_target: &str) -> &'static str {
    match rust_target {
        "armv7-unknown-linux-musleabihf" => {
            "arm-linux-musleabihf -mcpu=generic+v7a+vfp3-d32+thumb2-neon"
        }
        "aarch64-unknown-linux-musl" => "aarch64-linux-musl",
        _ => "x86_64-linux-musl",
    }
}

fn build_std(ctx: &Context, target_dir: &Path) -> Vec<Step> {
    let cache = &ctx.opts.cache;
    let zig = ctx
        .machine
        .zig
        .as_deref()
        .map_or_else(|| "zig".to_string(), path);
    let rustc = ctx
        .machine
        .debian_rustc
        .as_deref()
        .map_or_else(|| "/usr/bin/rustc".to_string(), path);
    let cargo = ctx
        .machine
        .build_std_cargo
        .as_deref()
        .map_or_else(|| "cargo".to_string(), path);
    let (wrappers, zig_cache) = (cache.join("zig-cc"), path(&cache.join("zig")));
    let mut steps = vec![
        Step::MakeDir(wrappers.clone()),
        Step::MakeDir(cache.join("zig")),
    ];
    let auditable = ctx
        .machine
        .cargo_auditable
        .as_deref()
        .map_or_else(|| "cargo-auditable".to_string(), path);
    // `cargo auditable build` embeds the dependency list (a `.dep-v0`
    // section) for scanners; it runs the cargo named by CARGO.
    let mut cmd = Cmd::new(&auditable, std::iter::once("auditable").chain(BUILD))
        .env("CARGO", &cargo)
        .env("ZIG_GLOBAL_CACHE_DIR", &zig_cache)
        .env("ZIG_LOCAL_CACHE_DIR", &zig_cache);
    let rustflags = format!("-C link-self-contained=no {}", ctx.opts.rustflags)
        .trim_end()
        .to_string();
    let remaps = path_remaps(ctx, target_dir);
    for target in &ctx.opts.targets {
        // zig cc as C compiler and linker; cc-rs adds a --target=<rust
        // triple> that zig would reject, so the wrapper drops it.
        let (cc, ar) = (wrappers.join(target), wrappers.join(format!("{target}-ar")));
        steps.push(Step::Write {
            path: cc.clone(),
            contents: format!(
                "#!/bin/sh\nfor a do\n  shift\n  case \"$a\" in --target=*) continue ;; esac\n  set -- \"$@\" \"$a\"\ndone\n\
                 exec \"{zig}\" cc -target {} \"$@\"\n",
                zig_target(target)
            ),
            executable: true,
        });
        steps.push(Step::Write {
            path: ar.clone(),
            contents: format!("#!/bin/sh\nexec \"{zig}\" ar \"$@\"\n"),
            executable: true,
        });
        let (upper, lower) = (
            target.to_uppercase().replace('-', "_"),
            target.replace('-', "_"),
        );
        cmd = cmd
            .env(format!("CARGO_TARGET_{upper}_LINKER"), path(&cc))
            .env(format!("CC_{lower}"), path(&cc))
            .env(format!("AR_{lower}"), path(&ar))
            // build-std makes no self-contained crt objects; zig brings its own.
            .env(format!("CARGO_TARGET_{upper}_RUSTFLAGS"), &rustflags);
        cmd.args.extend(["--target".to_string(), target.clone()]);
        cmd.args.extend(remap_config(target, &remaps));
    }
    cmd.args.extend(ctx.opts.extra_cargo_args.iter().cloned());
    // std is built from Debian's rust-web-src with the workspace's release
    // profile; no std features (no backtrace symbolizer: panic=abort anyway).
    cmd.args
        .extend(["-Z", "build-std=std,panic_abort", "-Z"].map(String::from));
    cmd.args
        .push(format!("build-std-features={}", ctx.opts.std_features));
    let cmd = cmd
        .env("RUSTC", &rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", path(target_dir));
    steps.push(Step::Log(format!(
        "cargo auditable build (build-std with {rustc}) into {}",
        target_dir.display()
    )));
    steps.push(Step::Run(cmd));
    steps
}

/// The SBOM of a service's image for one platform, beside the archives:
/// `dist/images/gcd.linux-arm-v7.cdx.json`.
pub fn sbom_path(opts: &Options, service: &str, platform: &str) -> PathBuf {
    opts.dist
        .join("images")
        .join(format!("{service}.{}.cdx.json", platform.replace('/', "-")))
}

/// Step 2: one multi-arch image per service, pushed or archived, and the
/// SBOM of each image.
pub fn images(ctx: &Context) -> Vec<Step> {
    let mut steps = Vec::new();
    for target in &ctx.opts.targets {
        for service in SERVICES {
            steps.push(Step::Require {
                path: ctx.opts.dist.join(target).join(service),
                hint: "build the binaries first (scripts/build-arm.sh without --images-only)"
                    .into(),
            });
        }
    }
    steps.push(Step::MakeDir(ctx.opts.dist.join("images")));
    steps.extend(sboms(ctx));
    let builder = match (ctx.choice.image_tool, &ctx.opts.registry) {
        (ImageTool::Buildx, Some(registry)) if !ctx.opts.tls_verify => {
            steps.extend(http_builder(ctx.opts, registry));
            Some(HTTP_BUILDER)
        }
        _ => None,
    };
    for service in SERVICES {
        match ctx.choice.image_tool {
            ImageTool::Buildx => steps.extend(buildx(ctx, service, builder)),
            ImageTool::Buildah => steps.extend(buildah(ctx, service)),
        }
    }
    steps
}

/// The buildx builder that pushes to a plain-HTTP registry.
pub const HTTP_BUILDER: &str = "pi-gcd-http";

/// BuildKit's configuration for a registry over plain HTTP.
pub fn buildkitd_config_path(opts: &Options) -> PathBuf {
    opts.cache.join("buildkitd-http.toml")
}

/// A `docker-container` builder whose BuildKit speaks plain HTTP to the
/// registry. BuildKit pushes by itself and ignores the docker daemon's
/// `insecure-registries`; `--insecure` has to reach it through its own
/// configuration, given to `docker buildx create`. The builder shares the
/// host's network, so the registry's name and address mean what they mean
/// on the host (`localhost:5000` included). Made afresh each run, so a
/// changed registry takes effect.
fn http_builder(opts: &Options, registry: &str) -> Vec<Step> {
    let host = registry.split('/').next().unwrap_or(registry);
    let config = buildkitd_config_path(opts);
    vec![
        Step::MakeDir(opts.cache.clone()),
        Step::Write {
            path: config.clone(),
            contents: format!(
                "# BuildKit configuration of the {HTTP_BUILDER} builder \
                 (scripts/build-arm.sh --insecure):\n\
                 # push to {host} over plain HTTP.\n\
                 [registry.\"{host}\"]\n  http = true\n  insecure = true\n"
            ),
            executable: false,
        },
        Step::Run(
            Cmd::new("docker", ["buildx", "rm", HTTP_BUILDER])
                .quiet()
                .may_fail(),
        ),
        Step::Run(Cmd::new(
            "docker",
            [
                "buildx",
                "create",
                "--name",
                HTTP_BUILDER,
                "--driver",
                "docker-container",
                "--driver-opt",
                "network=host",
                "--buildkitd-config",
                &path(&config),
            ],
        )),
    ]
}

/// The name cargo-cyclonedx gives its output, in each workspace member.
const SBOM_SCRATCH: &str = "pi-gcd-sbom";

/// One CycloneDX SBOM per service and platform, from the same lock file and
/// target as the binary (cargo-cyclonedx honours SOURCE_DATE_EPOCH). The
/// workspace's absolute path is taken out, so the SBOM is the same on every
/// machine.
fn sboms(ctx: &Context) -> Vec<Step> {
    let cyclonedx = ctx
        .machine
        .cargo_cyclonedx
        .as_deref()
        .map_or_else(|| "cargo-cyclonedx".to_string(), path);
    let mut steps = Vec::new();
    for (target, platform) in TARGETS.iter().zip(PLATFORMS) {
        steps.push(Step::Log(format!("SBOMs for {platform}")));
        steps.push(Step::Run(
            Cmd::new(
                &cyclonedx,
                [
                    "cyclonedx",
                    "--quiet",
                    "--format",
                    "json",
                    "--spec-version",
                    "1.5",
                    "--target",
                    target,
                    "--override-filename",
                    SBOM_SCRATCH,
                ],
            )
            .env("SOURCE_DATE_EPOCH", ctx.meta.source_date_epoch.to_string()),
        ));
        for service in SERVICES {
            steps.push(Step::Rewrite {
                from: ctx.root.join(service).join(format!("{SBOM_SCRATCH}.json")),
                to: sbom_path(ctx.opts, service, platform),
                replace: vec![(format!("file://{}", path(ctx.root)), "file://.".into())],
            });
        }
        steps.push(Step::RemoveFromEach {
            dir: ctx.root.to_path_buf(),
            name: format!("{SBOM_SCRATCH}.json"),
        });
    }
    steps
}

fn build_args(meta: &Meta) -> Vec<String> {
    [
        format!("VERSION={}", meta.version),
        format!("REVISION={}", meta.revision),
        format!("SOURCE={}", meta.source_url),
        format!("CREATED={}", meta.created()),
    ]
    .into_iter()
    .flat_map(|arg| ["--build-arg".to_string(), arg])
    .collect()
}

fn buildx(ctx: &Context, service: &str, builder: Option<&str>) -> Vec<Step> {
    let (opts, meta) = (ctx.opts, ctx.meta);
    let epoch = meta.source_date_epoch.to_string();
    let mut cmd = Cmd::new("docker", ["buildx", "build"]).env("SOURCE_DATE_EPOCH", &epoch);
    if let Some(builder) = builder {
        cmd.args.extend(["--builder".into(), builder.to_string()]);
    }
    cmd.args
        .extend(["--platform".to_string(), PLATFORMS.join(","), "-f".into()]);
    cmd.args.push(format!("docker/{service}.Dockerfile"));
    cmd.args.extend(build_args(meta));
    cmd.args
        .extend(["--build-arg".into(), format!("SOURCE_DATE_EPOCH={epoch}")]);
    // No attestations: they would add "unknown/unknown" entries to the index.
    cmd.args
        .extend(["--provenance=false", "--sbom=false"].map(String::from));
    let mut steps = Vec::new();
    let mut record = Vec::new();
    match &opts.registry {
        Some(registry) => {
            for tag in [
                meta.version.clone(),
                format!("{}-{}", meta.version, meta.revision),
            ] {
                cmd.args
                    .extend(["--tag".into(), format!("{registry}/{service}:{tag}")]);
            }
            let metadata = opts
                .dist
                .join("images")
                .join(format!("{service}.push.json"));
            cmd.args
                .extend(["--push".into(), "--metadata-file".into(), path(&metadata)]);
            steps.push(Step::RemoveFile(pushed_path(&opts.dist, service)));
            record.push(Step::RecordDigest {
                from: metadata,
                to: pushed_path(&opts.dist, service),
                reference: format!("{registry}/{service}:{}", meta.version),
            });
        }
        None => cmd.args.extend([
            "--output".into(),
            format!(
                "type=oci,dest={},name={}/{service}:{}",
                archive_path(opts, service).display(),
                opts.image_namespace,
                meta.version
            ),
        ]),
    }
    cmd.args.push(".".into());
    cmd.hint = Some(
        "an OCI archive of several platforms needs a builder with the docker-container driver: \
         docker buildx create --use"
            .into(),
    );
    steps.push(Step::Run(cmd));
    steps.extend(record);
    steps
}

fn buildah(ctx: &Context, service: &str) -> Vec<Step> {
    let (opts, meta) = (ctx.opts, ctx.meta);
    let epoch = meta.source_date_epoch.to_string();
    // Storage of our own (vfs: works in containers and without fuse), so the
    // build neither needs nor touches the machine's image store.
    let storage = [
        "--root".to_string(),
        path(&opts.cache.join("containers").join("storage")),
        "--runroot".into(),
        path(&opts.cache.join("containers").join("run")),
        "--storage-driver".into(),
        "vfs".into(),
    ];
    let buildah = |args: &[&str]| {
        let mut cmd = Cmd::new("buildah", storage.clone()).env("BUILDAH_ISOLATION", "chroot");
        cmd.args.extend(args.iter().map(|a| a.to_string()));
        cmd
    };
    let list = format!("localhost/pi-gcd-build/{service}:{}", meta.version);
    let mut steps = vec![
        Step::Run(buildah(&["manifest", "rm", &list]).quiet().may_fail()),
        Step::Run(buildah(&["manifest", "create", &list]).quiet()),
    ];
    for platform in PLATFORMS {
        let image = format!(
            "localhost/pi-gcd-build/{service}:{}-{}",
            meta.version,
            platform.replace('/', "-")
        );
        let mut parts = platform.split('/').skip(1);
        let (arch, variant) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let dockerfile = format!("docker/{service}.Dockerfile");
        let (target_arch, target_variant) = (
            format!("TARGETARCH={arch}"),
            format!("TARGETVARIANT={variant}"),
        );
        // buildah sets TARGETARCH/TARGETVARIANT from --platform but warns
        // when a platform has no variant; spelled out, the warning goes away.
        let mut bud = buildah(&["bud", "--quiet", "--platform", platform, "-f", &dockerfile])
            .env("SOURCE_DATE_EPOCH", &epoch)
            .quiet();
        bud.args.extend([
            "--build-arg".into(),
            target_arch,
            "--build-arg".into(),
            target_variant,
        ]);
        bud.args.extend(build_args(meta));
        bud.args
            .extend(["--timestamp", &epoch, "--squash", "-t", &image, "."].map(String::from));
        steps.push(Step::Log(format!("buildah bud {service} for {platform}")));
        steps.push(Step::Run(bud));
        steps.push(Step::Run(
            buildah(&[
                "manifest",
                "add",
                &list,
                &format!("containers-storage:{image}"),
            ])
            .quiet(),
        ));
    }
    match &opts.registry {
        Some(registry) => {
            let tls = format!("--tls-verify={}", opts.tls_verify);
            let (digest_file, pushed) = (
                opts.dist.join("images").join(format!("{service}.digest")),
                pushed_path(&opts.dist, service),
            );
            steps.push(Step::RemoveFile(pushed.clone()));
            for tag in [
                meta.version.clone(),
                format!("{}-{}", meta.version, meta.revision),
            ] {
                let destination = format!("docker://{registry}/{service}:{tag}");
                steps.push(Step::Log(format!("pushing {registry}/{service}:{tag}")));
                let mut push =
                    buildah(&["manifest", "push", "--quiet", "--all", "--format", "oci"]);
                // The version tag's digest is what the manifests pin.
                if tag == meta.version {
                    push.args
                        .extend(["--digestfile".into(), path(&digest_file)]);
                }
                push.args.extend([tls.clone(), list.clone(), destination]);
                steps.push(Step::Run(push));
            }
            steps.push(Step::RecordDigest {
                from: digest_file,
                to: pushed,
                reference: format!("{registry}/{service}:{}", meta.version),
            });
        }
        None => {
            let layout = opts.cache.join("oci-layout").join(service);
            let oci = format!("oci:{}", layout.join("layout").display());
            steps.push(Step::RemoveDir(layout.clone()));
            steps.push(Step::MakeDir(layout.clone()));
            steps.push(Step::Run(
                buildah(&[
                    "manifest", "push", "--quiet", "--all", "--format", "oci", &list, &oci,
                ])
                .quiet(),
            ));
            // The archive carries each platform's SBOM as an attestation.
            let mut archive = Cmd::new(
                "python3",
                [
                    "scripts/lib/oci_archive.py".to_string(),
                    path(&layout.join("layout")),
                    path(&archive_path(opts, service)),
                    format!("{}/{service}:{}", opts.image_namespace, meta.version),
                    epoch.clone(),
                ],
            );
            archive
                .args
                .extend(PLATFORMS.map(|p| format!("{p}={}", path(&sbom_path(opts, service, p)))));
            steps.push(Step::Run(archive));
            steps.push(Step::RemoveDir(layout));
        }
    }
    // The per-platform images stay in the cache storage; drop the list only.
    steps.push(Step::Run(
        buildah(&["manifest", "rm", &list]).quiet().may_fail(),
    ));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::tests::options;
    use crate::route::tests::{debian, laptop};

    fn meta() -> Meta {
        Meta {
            version: "0.1.0".into(),
            source_url: "https://example.org/pi-gcd".into(),
            revision: "0123456789ab".into(),
            source_date_epoch: 1_700_000_000,
        }
    }

    fn plan(args: &[&str], machine: &Machine) -> (Vec<Step>, Vec<Step>) {
        let opts = options(args, &[("HOME", "/home/pi")]);
        let meta = meta();
        let choice = crate::route::choose(&opts, machine).unwrap();
        let ctx = Context {
            opts: &opts,
            meta: &meta,
            choice: &choice,
            machine,
            root: Path::new("/src/pi-gcd"),
        };
        (binaries(&ctx), images(&ctx))
    }

    fn commands(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Run(cmd) => Some(format!("{} {}", cmd.program, cmd.args.join(" "))),
                _ => None,
            })
            .collect()
    }

    fn staged(steps: &[Step]) -> Vec<(String, String)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Stage { from, to, mtime } => {
                    assert_eq!(*mtime, 1_700_000_000);
                    Some((path(from), path(to)))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn cross_route_builds_each_target_then_one_buildx_archive_per_service() {
        let (bins, imgs) = plan(&[], &laptop());
        assert_eq!(
            commands(&bins),
            TARGETS.map(|t| format!(
                "cross build --release --locked -p gcd -p api --target {t} \
                 --config target.{t}.rustflags=[\"--remap-path-prefix=/src/pi-gcd=/build\"]"
            ))
        );
        let Step::Run(cross) = &bins[1] else {
            panic!("{:?}", bins[1])
        };
        assert_eq!(
            cross.env,
            [(
                "CARGO_TARGET_DIR".to_string(),
                "/src/pi-gcd/target".to_string()
            )]
        );
        let staged = staged(&bins);
        assert_eq!(staged.len(), 6);
        assert_eq!(
            staged[0],
            (
                "/src/pi-gcd/target/armv7-unknown-linux-musleabihf/release/gcd".into(),
                "dist/armv7-unknown-linux-musleabihf/gcd".into()
            )
        );
        let build_args = "--build-arg VERSION=0.1.0 --build-arg REVISION=0123456789ab \
                          --build-arg SOURCE=https://example.org/pi-gcd --build-arg CREATED=2023-11-14T22:13:20Z \
                          --build-arg SOURCE_DATE_EPOCH=1700000000 --provenance=false --sbom=false";
        // Three SBOM runs, then the images.
        assert_eq!(
            commands(&imgs)[3..],
            ["gcd", "api"].map(|s| format!(
                "docker buildx build --platform linux/arm/v7,linux/arm64,linux/amd64 -f docker/{s}.Dockerfile \
                 {build_args} --output type=oci,dest=dist/images/{s}.oci.tar,name=localhost/pi-gcd/{s}:0.1.0 ."
            ))
        );
        assert!(imgs.contains(&Step::MakeDir("dist/images".into())));
        assert_eq!(
            imgs.iter()
                .filter(|s| matches!(s, Step::Require { .. }))
                .count(),
            6
        );
    }

    #[test]
    fn cross_route_pushes_both_tags_to_a_registry() {
        let (_, imgs) = plan(
            &["--images-only", "--registry", "registry.lan:5000/"],
            &laptop(),
        );
        let pushes: Vec<String> = commands(&imgs)
            .into_iter()
            .filter(|c| c.starts_with("docker"))
            .collect();
        assert_eq!(pushes.len(), 2);
        assert!(
            pushes[1].starts_with(
                "docker buildx build --platform linux/arm/v7,linux/arm64,linux/amd64 -f docker/api.Dockerfile"
            ) && pushes[1].ends_with(
                "--tag registry.lan:5000/api:0.1.0 --tag registry.lan:5000/api:0.1.0-0123456789ab --push \
                 --metadata-file dist/images/api.push.json ."
            ),
            "{}",
            pushes[1]
        );
        assert!(!pushes[1].contains("--output"));
        // What was pushed is recorded for render-manifests, stale records
        // removed first.
        let push = imgs
            .iter()
            .position(|s| matches!(s, Step::Run(c) if c.args.contains(&"docker/api.Dockerfile".to_string())))
            .unwrap();
        assert_eq!(
            imgs[push - 1],
            Step::RemoveFile("dist/images/api.pushed".into())
        );
        assert_eq!(
            imgs[push + 1],
            Step::RecordDigest {
                from: "dist/images/api.push.json".into(),
                to: "dist/images/api.pushed".into(),
                reference: "registry.lan:5000/api:0.1.0".into(),
            }
        );
    }

    #[test]
    fn cross_route_pushes_to_a_plain_http_registry_through_a_builder_of_its_own() {
        let (_, imgs) = plan(
            &[
                "--images-only",
                "--registry",
                "registry.lan:5000/pi",
                "--insecure",
            ],
            &laptop(),
        );
        let config = imgs
            .iter()
            .find_map(|s| match s {
                Step::Write { path, contents, .. } if path.ends_with("buildkitd-http.toml") => {
                    Some(contents.clone())
                }
                _ => None,
            })
            .unwrap();
        assert!(
            config
                .ends_with("[registry.\"registry.lan:5000\"]\n  http = true\n  insecure = true\n"),
            "{config}"
        );
        let docker: Vec<String> = commands(&imgs)
            .into_iter()
            .filter(|c| c.starts_with("docker"))
            .collect();
        assert_eq!(docker.len(), 4, "{docker:?}");
        assert_eq!(docker[0], "docker buildx rm pi-gcd-http");
        assert_eq!(
            docker[1],
            "docker buildx create --name pi-gcd-http --driver docker-container \
             --driver-opt network=host --buildkitd-config /home/pi/.cache/pi-gcd/buildkitd-http.toml"
        );
        for (build, service) in docker[2..].iter().zip(SERVICES) {
            assert!(
                build.starts_with(&format!(
                    "docker buildx build --builder pi-gcd-http --platform linux/arm/v7,linux/arm64,linux/amd64 \
                     -f docker/{service}.Dockerfile"
                )),
                "{build}"
            );
            assert!(
                build.contains(&format!("--tag registry.lan:5000/pi/{service}:0.1.0 ")),
                "{build}"
            );
        }
        // Without --insecure, or without a registry, the user's builder.
        for args in [&["--registry", "registry.lan:5000"][..], &["--insecure"]] {
            let (_, imgs) = plan(args, &laptop());
            assert!(
                !commands(&imgs).iter().any(|c| c.contains("pi-gcd-http")),
                "{args:?}"
            );
        }
    }

    #[test]
    fn every_route_writes_an_sbom_per_image_and_platform_beside_the_archives() {
        for machine in [laptop(), debian()] {
            let (_, imgs) = plan(&["--images-only"], &machine);
            let sbom_runs: Vec<&Cmd> = imgs
                .iter()
                .filter_map(|s| match s {
                    Step::Run(c) if c.program.ends_with("cargo-cyclonedx") => Some(c),
                    _ => None,
                })
                .collect();
            assert_eq!(sbom_runs.len(), 3);
            assert_eq!(
                sbom_runs[0].args.join(" "),
                "cyclonedx --quiet --format json --spec-version 1.5 \
                 --target armv7-unknown-linux-musleabihf --override-filename pi-gcd-sbom"
            );
            assert_eq!(
                sbom_runs[0].env,
                [("SOURCE_DATE_EPOCH".to_string(), "1700000000".to_string())]
            );
            let written: Vec<(String, String)> = imgs
                .iter()
                .filter_map(|s| match s {
                    Step::Rewrite { from, to, replace } => {
                        assert_eq!(
                            replace,
                            &[("file:///src/pi-gcd".to_string(), "file://.".to_string())]
                        );
                        Some((path(from), path(to)))
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(written.len(), 6);
            assert_eq!(
                written[0],
                (
                    "/src/pi-gcd/gcd/pi-gcd-sbom.json".into(),
                    "dist/images/gcd.linux-arm-v7.cdx.json".into()
                )
            );
            assert_eq!(written[5].1, "dist/images/api.linux-amd64.cdx.json");
            // What cargo-cyclonedx left in the other workspace members goes.
            assert!(imgs.contains(&Step::RemoveFromEach {
                dir: "/src/pi-gcd".into(),
                name: "pi-gcd-sbom.json".into()
            }));
            let made = imgs
                .iter()
                .position(|s| s == &Step::MakeDir("dist/images".into()));
            let first_sbom = imgs.iter().position(|s| matches!(s, Step::Rewrite { .. }));
            assert!(made < first_sbom, "{imgs:?}");
        }
    }

    #[test]
    fn daemonless_route_builds_std_with_zig_for_every_target_in_one_cargo_run() {
        let (bins, _) = plan(&[], &debian());
        let runs: Vec<&Cmd> = bins
            .iter()
            .filter_map(|s| if let Step::Run(c) = s { Some(c) } else { None })
            .collect();
        assert_eq!(runs.len(), 1);
        let cargo = runs[0];
        let config = |t: &str| {
            format!(
                "--config target.{t}.rustflags=[\"--remap-path-prefix=/src/pi-gcd=/build\", \
                 \"--remap-path-prefix=/home/pi/.cargo=/cargo\", \
                 \"--remap-path-prefix=/home/pi/.cache/pi-gcd/clones/pi-gcd-4dff1a64/target-musl=/target\", \
                 \"--remap-path-prefix=/usr/lib/rustlib/src/rust=/rustc/ac68faa20c58cbccd01ee7208bf3b6e93a7d7f96\"]"
            )
        };
        assert_eq!(
            format!("{} {}", cargo.program, cargo.args.join(" ")),
            format!(
                "/cache/tools/bin/cargo-auditable auditable build --release --locked -p gcd -p api \
                 --target armv7-unknown-linux-musleabihf {} \
                 --target aarch64-unknown-linux-musl {} --target x86_64-unknown-linux-musl {} \
                 -Z build-std=std,panic_abort -Z build-std-features=",
                config("armv7-unknown-linux-musleabihf"),
                config("aarch64-unknown-linux-musl"),
                config("x86_64-unknown-linux-musl")
            )
        );
        let env = |name: &str| {
            cargo
                .env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(env("CARGO"), Some("/usr/bin/cargo"));
        assert_eq!(env("RUSTC"), Some("/usr/bin/rustc"));
        assert_eq!(env("RUSTC_BOOTSTRAP"), Some("1"));
        assert_eq!(
            env("CARGO_TARGET_DIR"),
            Some("/home/pi/.cache/pi-gcd/clones/pi-gcd-4dff1a64/target-musl")
        );
        let linker = "/home/pi/.cache/pi-gcd/zig-cc/armv7-unknown-linux-musleabihf";
        assert_eq!(
            env("CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_LINKER"),
            Some(linker)
        );
        assert_eq!(env("CC_armv7_unknown_linux_musleabihf"), Some(linker));
        assert_eq!(
            env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS"),
            Some("-C link-self-contained=no")
        );
        let wrapper = bins
            .iter()
            .find_map(|s| match s {
                Step::Write {
                    path,
                    contents,
                    executable: true,
                } if path.ends_with("armv7-unknown-linux-musleabihf") => Some(contents.clone()),
                _ => None,
            })
            .unwrap();
        assert!(
            wrapper.ends_with(
                "exec \"/venv/zig\" cc -target arm-linux-musleabihf -mcpu=generic+v7a+vfp3-d32+thumb2-neon \"$@\"\n"
            ),
            "{wrapper}"
        );
        assert_eq!(
            staged(&bins)[5].0,
            "/home/pi/.cache/pi-gcd/clones/pi-gcd-4dff1a64/target-musl/x86_64-unknown-linux-musl/release/api"
        );
    }

    #[test]
    fn remaps_survive_spaces_and_quotes_in_paths() {
        let remaps = [(
            "/Users/me/My \"Code\"/pi-gcd".to_string(),
            "/build".to_string(),
        )];
        assert_eq!(
            remap_config("aarch64-unknown-linux-musl", &remaps),
            [
                "--config".to_string(),
                r#"target.aarch64-unknown-linux-musl.rustflags=["--remap-path-prefix=/Users/me/My \"Code\"/pi-gcd=/build"]"#
                    .to_string()
            ]
        );
        assert_eq!(toml_string("a\\b\tc"), r#""a\\b\u0009c""#);
    }

    #[test]
    fn daemonless_route_builds_each_platform_with_buildah_and_writes_the_archive() {
        let (_, imgs) = plan(&[], &debian());
        let commands = commands(&imgs);
        let storage = "buildah --root /home/pi/.cache/pi-gcd/containers/storage \
                       --runroot /home/pi/.cache/pi-gcd/containers/run --storage-driver vfs";
        assert_eq!(
            commands[3],
            format!("{storage} manifest rm localhost/pi-gcd-build/gcd:0.1.0")
        );
        assert!(commands[5].starts_with(&format!(
            "{storage} bud --quiet --platform linux/arm/v7 -f docker/gcd.Dockerfile \
             --build-arg TARGETARCH=arm --build-arg TARGETVARIANT=v7 --build-arg VERSION=0.1.0"
        )));
        assert!(commands[5].ends_with(
            "--timestamp 1700000000 --squash -t localhost/pi-gcd-build/gcd:0.1.0-linux-arm-v7 ."
        ));
        assert!(
            commands
                .iter()
                .any(|c| c.contains("--platform linux/amd64") && c.contains("TARGETVARIANT= "))
        );
        assert!(
            commands.contains(
                &"python3 scripts/lib/oci_archive.py /home/pi/.cache/pi-gcd/oci-layout/api/layout \
              dist/images/api.oci.tar localhost/pi-gcd/api:0.1.0 1700000000 \
              linux/arm/v7=dist/images/api.linux-arm-v7.cdx.json \
              linux/arm64=dist/images/api.linux-arm64.cdx.json \
              linux/amd64=dist/images/api.linux-amd64.cdx.json"
                    .to_string()
            )
        );
        // Three SBOM runs; each service: rm, create, 3 x (bud, add), push,
        // archive, rm.
        assert_eq!(commands.len(), 3 + 2 * 11);
    }

    #[test]
    fn buildah_pushes_both_tags_honouring_insecure() {
        let (_, imgs) = plan(
            &[
                "--images-only",
                "--registry",
                "127.0.0.1:5000/pi-gcd",
                "--insecure",
            ],
            &debian(),
        );
        let pushes: Vec<String> = commands(&imgs)
            .into_iter()
            .filter(|c| c.contains("manifest push"))
            .collect();
        assert_eq!(pushes.len(), 4);
        assert!(pushes[0].ends_with(
            "manifest push --quiet --all --format oci --digestfile dist/images/gcd.digest \
             --tls-verify=false localhost/pi-gcd-build/gcd:0.1.0 docker://127.0.0.1:5000/pi-gcd/gcd:0.1.0"
        ), "{}", pushes[0]);
        assert!(pushes[1].ends_with(
            "manifest push --quiet --all --format oci \
             --tls-verify=false localhost/pi-gcd-build/gcd:0.1.0 docker://127.0.0.1:5000/pi-gcd/gcd:0.1.0-0123456789ab"
        ));
        assert!(imgs.contains(&Step::RecordDigest {
            from: "dist/images/gcd.digest".into(),
            to: "dist/images/gcd.pushed".into(),
            reference: "127.0.0.1:5000/pi-gcd/gcd:0.1.0".into(),
        }));
        assert!(!commands(&imgs).iter().any(|c| c.contains("oci_archive")));
    }

    #[test]
    fn size_experiments_pass_their_settings_through() {
        let opts = options(
            &["--binaries-only"],
            &[
                ("HOME", "/h"),
                ("PI_GCD_TARGETS", "armv7-unknown-linux-musleabihf"),
                ("PI_GCD_CARGO_ARGS", "--config profile.release.opt-level=3"),
                ("PI_GCD_RUSTFLAGS", "-Z location-detail=none"),
                ("PI_GCD_STD_FEATURES", "backtrace"),
                ("PI_GCD_DIST", "/tmp/out"),
                ("PI_GCD_TARGET_DIR", "/tmp/target"),
            ],
        );
        let (machine, meta) = (debian(), meta());
        let choice = crate::route::choose(&opts, &machine).unwrap();
        let ctx = Context {
            opts: &opts,
            meta: &meta,
            choice: &choice,
            machine: &machine,
            root: Path::new("/src"),
        };
        let steps = binaries(&ctx);
        let Some(Step::Run(cargo)) = steps.iter().find(|s| matches!(s, Step::Run(_))) else {
            panic!()
        };
        assert!(cargo.args.join(" ").ends_with(
            "--remap-path-prefix=/usr/lib/rustlib/src/rust=/rustc/ac68faa20c58cbccd01ee7208bf3b6e93a7d7f96\"] \
             --config profile.release.opt-level=3 \
             -Z build-std=std,panic_abort -Z build-std-features=backtrace"
        ));
        // The remaps name the target directory in use.
        assert!(
            cargo.args.contains(
                &remap_config(
                    "armv7-unknown-linux-musleabihf",
                    &[
                        ("/src".into(), "/build".into()),
                        ("/home/pi/.cargo".into(), "/cargo".into()),
                        ("/tmp/target".into(), "/target".into()),
                        (
                            "/usr/lib/rustlib/src/rust".into(),
                            "/rustc/ac68faa20c58cbccd01ee7208bf3b6e93a7d7f96".into()
                        ),
                    ]
                )[1]
            ),
            "{:?}",
            cargo.args
        );
        assert!(cargo.env.contains(&(
            "CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS".into(),
            "-C link-self-contained=no -Z location-detail=none".into()
        )));
        assert_eq!(
            staged(&steps),
            ["gcd", "api"].map(|s| (
                format!("/tmp/target/armv7-unknown-linux-musleabihf/release/{s}"),
                format!("/tmp/out/armv7-unknown-linux-musleabihf/{s}")
            ))
        );
    }
}
