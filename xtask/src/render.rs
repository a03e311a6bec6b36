//! `render-manifests`: a copy of `k8s/` for a cluster that pulls the images
//! from a registry, or runs another version. Only the `image:` lines and the
//! `app.kubernetes.io/version` labels change; everything else is copied as
//! written. Plain text edits in Rust rather than `sed`, whose regex dialects
//! differ between GNU (Linux) and BSD (macOS).
//!
//! Where `build-arm --registry` recorded what it pushed
//! (`dist/images/<service>.pushed`, `REGISTRY/gcd:VERSION@sha256:...`), the
//! image is pinned by that digest: nodes run exactly what was pushed, and a
//! rebuild of the same version changes the manifests, so `kubectl apply`
//! rolls it out.

use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::options::{LOCAL_NAMESPACE, SERVICES, check_registry, usage};

pub const HELP: &str = "\
Writes a copy of k8s/ for a cluster that pulls the images from a registry.

Usage: scripts/render-manifests.sh [options]   (or: cargo xtask render-manifests [options])

  --registry REG   images become REG/gcd:VERSION and REG/api:VERSION, the
                   names `scripts/build-arm.sh --registry REG` pushes; env
                   REGISTRY. Without it they stay localhost/pi-gcd/...
                   (imported images).
  --version V      the image tag and app.kubernetes.io/version label
                   (default: the workspace version, which k8s/ is written for)
  --out DIR        where the copy goes (default dist/k8s); its old *.yaml
                   files are replaced
  -h, --help       this text

Where build-arm.sh recorded a push of that very image in
dist/images/<service>.pushed, the image is pinned by its digest
(REG/gcd:VERSION@sha256:...): the nodes run what was pushed, and a rebuild
of the same version changes the manifests, so `kubectl apply -f DIR` rolls
it out. Nothing else in the manifests changes. Then: kubectl apply -f DIR
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    pub registry: Option<String>,
    /// `None`: the version k8s/ is written for.
    pub version: Option<String>,
    pub out: PathBuf,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParsedRender {
    Run(RenderOptions),
    Help,
}

pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ParsedRender, Error> {
    let mut registry = env("REGISTRY").filter(|r| !r.is_empty());
    let (mut version, mut out) = (None, PathBuf::from("dist/k8s"));
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value)),
            _ => (arg.clone(), None),
        };
        let mut value = |flag: &str| match inline {
            Some(v) => Ok(v.to_string()),
            None => args
                .next()
                .ok_or_else(|| usage(format!("{flag} needs a value"))),
        };
        match flag.as_str() {
            "--registry" => registry = Some(value("--registry")?),
            "--version" => version = Some(value("--version")?),
            "--out" => out = PathBuf::from(value("--out")?),
            "-h" | "--help" if inline.is_none() => return Ok(ParsedRender::Help),
            _ => return Err(usage(format!("unknown argument: {arg}"))),
        }
    }
    let registry = registry.map(|r| check_registry(&r)).transpose()?;
    if let Some(v) = &version {
        check_tag(v)?;
    }
    Ok(ParsedRender::Run(RenderOptions {
        registry,
        version,
        out,
    }))
}

/// An image tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), Error> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && tag.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        Ok(())
    } else {
        Err(usage(format!(
            "--version '{tag}' is not an image tag (letters, digits, _ . -)"
        )))
    }
}

/// What the build recorded for a push: `REGISTRY/SERVICE:TAG@sha256:HEX`.
pub fn pushed_path(dist: &Path, service: &str) -> PathBuf {
    dist.join("images").join(format!("{service}.pushed"))
}

/// The digest in a push record, if it is a record of exactly `image`.
pub fn pinned(record: &str, image: &str) -> Option<String> {
    let (name, digest) = record.trim().split_once('@')?;
    (name == image && is_digest(digest)).then(|| format!("{name}@{digest}"))
}

pub fn is_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// One manifest file rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub name: String,
    pub text: String,
}

/// Rewrites every manifest in `files` (name, text): each `image:
/// localhost/pi-gcd/SERVICE:SOURCE_VERSION` line to `images(SERVICE)`, each
/// version label to `version`. Any other image line is an error, so a
/// manifest that drifted from the workspace version is never copied as is.
pub fn render(
    files: &[(String, String)],
    source_version: &str,
    version: &str,
    image: &dyn Fn(&str) -> String,
) -> Result<Vec<Rendered>, Error> {
    let label = format!("app.kubernetes.io/version: \"{source_version}\"");
    let mut rendered = Vec::new();
    for (name, text) in files {
        let mut out = String::with_capacity(text.len());
        for (number, line) in text.split_inclusive('\n').enumerate() {
            let body = line.trim_end_matches(['\n', '\r']);
            let (indent, rest) = body.split_at(body.len() - body.trim_start().len());
            let ending = &line[body.len()..];
            if let Some(value) = rest
                .strip_prefix("image:")
                .or_else(|| rest.strip_prefix("- image:"))
            {
                let key = &rest[..rest.len() - value.len()];
                let service = SERVICES
                    .iter()
                    .find(|s| value.trim() == format!("{LOCAL_NAMESPACE}/{s}:{source_version}"))
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "{name}:{}: `{}` is not {LOCAL_NAMESPACE}/{{gcd,api}}:{source_version}; \
                             k8s/ must name the images of the workspace version",
                            number + 1,
                            rest.trim()
                        ))
                    })?;
                out.push_str(&format!("{indent}{key} {}{ending}", image(service)));
            } else if rest == label {
                out.push_str(&format!(
                    "{indent}app.kubernetes.io/version: \"{version}\"{ending}"
                ));
            } else {
                out.push_str(line);
            }
        }
        rendered.push(Rendered {
            name: name.clone(),
            text: out,
        });
    }
    Ok(rendered)
}

/// `render-manifests`, run from the workspace root.
pub fn run(opts: &RenderOptions, root: &Path) -> Result<(), Error> {
    let cargo_toml =
        fs::read_to_string(root.join("Cargo.toml")).map_err(|e| Error::io("Cargo.toml", e))?;
    let source_version = crate::meta::workspace_package_field(&cargo_toml, "version")
        .ok_or_else(|| Error::Usage("no version in [workspace.package] of Cargo.toml".into()))?;
    let version = opts
        .version
        .clone()
        .unwrap_or_else(|| source_version.clone());
    let files = read_manifests(&root.join("k8s"))?;
    let dist = root.join("dist");
    let image = |service: &str| {
        let prefix = opts.registry.as_deref().unwrap_or(LOCAL_NAMESPACE);
        let name = format!("{prefix}/{service}:{version}");
        let record = opts
            .registry
            .as_ref()
            .and_then(|_| fs::read_to_string(pushed_path(&dist, service)).ok());
        match record.and_then(|r| pinned(&r, &name)) {
            Some(pinned) => pinned,
            None => name,
        }
    };
    let rendered = render(&files, &source_version, &version, &image)?;
    let pins = SERVICES.map(image);
    let out = if opts.out.is_absolute() {
        opts.out.clone()
    } else {
        root.join(&opts.out)
    };
    fs::create_dir_all(&out).map_err(|e| Error::io(format!("mkdir {}", out.display()), e))?;
    for old in yaml_files(&out)? {
        fs::remove_file(&old).map_err(|e| Error::io(format!("removing {}", old.display()), e))?;
    }
    for file in &rendered {
        let path = out.join(&file.name);
        fs::write(&path, &file.text)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    crate::exec::log(&format!(
        "manifests for {} written to {} (kubectl apply -f {})",
        pins.join(" and "),
        opts.out.display(),
        opts.out.display()
    ));
    if opts.registry.is_some() && pins.iter().any(|p| !p.contains('@')) {
        crate::exec::log(
            "no push of these tags recorded in dist/images/*.pushed: images named by tag only",
        );
    }
    Ok(())
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

fn read_manifests(dir: &Path) -> Result<Vec<(String, String)>, Error> {
    let mut files = Vec::new();
    for path in yaml_files(dir)? {
        let text = fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push((name, text));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::tests::env_of;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<ParsedRender, Error> {
        parse(args.iter().map(|a| a.to_string()), &env_of(env))
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn workspace_manifests() -> (Vec<(String, String)>, String) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        (
            read_manifests(&root.join("k8s")).unwrap(),
            env!("CARGO_PKG_VERSION").to_string(),
        )
    }

    #[test]
    fn flags_environment_and_bad_input() {
        assert_eq!(
            parse_with(
                &["--registry=registry.lan:5000/", "--version", "1.2.3"],
                &[]
            )
            .unwrap(),
            ParsedRender::Run(RenderOptions {
                registry: Some("registry.lan:5000".into()),
                version: Some("1.2.3".into()),
                out: "dist/k8s".into(),
            })
        );
        let ParsedRender::Run(opts) =
            parse_with(&["--out", "/tmp/x"], &[("REGISTRY", "ghcr.io/me")]).unwrap()
        else {
            panic!()
        };
        assert_eq!(opts.registry.as_deref(), Some("ghcr.io/me"));
        assert_eq!(opts.out, PathBuf::from("/tmp/x"));
        assert_eq!(parse_with(&["--help"], &[]).unwrap(), ParsedRender::Help);
        for bad in [
            &["--registry", "bad registry"][..],
            &["--registry", "me"],
            &["--version", "1.0/x"],
            &["--version", ""],
            &["--version"],
            &["--bogus"],
            &["--help=1"],
        ] {
            let error = parse_with(bad, &[]).expect_err(&format!("{bad:?}"));
            assert_eq!(error.exit_code(), 2, "{bad:?}: {error}");
        }
    }

    #[test]
    fn the_workspace_manifests_name_the_archived_images() {
        // The archives are named LOCAL_NAMESPACE/SERVICE:VERSION (plan.rs);
        // k8s/ must run exactly those, under no public registry.
        let (files, version) = workspace_manifests();
        let same = render(&files, &version, &version, &|s| {
            format!("{LOCAL_NAMESPACE}/{s}:{version}")
        })
        .unwrap();
        for (file, (_, text)) in same.iter().zip(&files) {
            assert_eq!(&file.text, text, "{}", file.name);
        }
        assert!(LOCAL_NAMESPACE.starts_with("localhost/"));
    }

    #[test]
    fn a_registry_changes_the_image_lines_and_nothing_else() {
        let (files, version) = workspace_manifests();
        let rendered = render(&files, &version, "9.8.7", &|s| {
            format!("registry.lan:5000/{s}:9.8.7@{DIGEST}")
        })
        .unwrap();
        let all: String = rendered.iter().map(|f| f.text.as_str()).collect();
        let original: String = files.iter().map(|(_, t)| t.as_str()).collect();
        for service in SERVICES {
            assert_eq!(
                all.matches(&format!(
                    "image: registry.lan:5000/{service}:9.8.7@{DIGEST}\n"
                ))
                .count(),
                1,
                "{service}"
            );
        }
        assert!(!all.contains(LOCAL_NAMESPACE));
        assert!(!all.contains(&format!("\"{version}\"")));
        assert_eq!(
            all.matches("app.kubernetes.io/version: \"9.8.7\"").count(),
            original
                .matches(&format!("app.kubernetes.io/version: \"{version}\""))
                .count()
        );
        assert_eq!(all.lines().count(), original.lines().count());
        let changed = all
            .lines()
            .zip(original.lines())
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed >= 2 + 4, "{changed}");
    }

    #[test]
    fn an_image_of_another_version_or_name_is_refused() {
        let file = |image: &str| {
            vec![(
                "10-gcd.yaml".to_string(),
                format!("spec:\n  containers:\n    - name: gcd\n      image: {image}\n"),
            )]
        };
        let to = |s: &str| format!("r.lan/{s}:0.1.0");
        let ok = render(&file("localhost/pi-gcd/gcd:0.1.0"), "0.1.0", "0.1.0", &to).unwrap();
        assert_eq!(
            ok[0].text,
            "spec:\n  containers:\n    - name: gcd\n      image: r.lan/gcd:0.1.0\n"
        );
        for stale in ["localhost/pi-gcd/gcd:0.0.9", "pi-gcd/gcd:0.1.0", "busybox"] {
            let error = render(&file(stale), "0.1.0", "0.1.0", &to).unwrap_err();
            assert!(error.to_string().contains("10-gcd.yaml:4"), "{error}");
        }
        // A list item that is an image, with CRLF line ends.
        let crlf = vec![(
            "x.yaml".to_string(),
            "containers:\r\n  - image: localhost/pi-gcd/api:0.1.0\r\n".to_string(),
        )];
        assert_eq!(
            render(&crlf, "0.1.0", "0.1.0", &to).unwrap()[0].text,
            "containers:\r\n  - image: r.lan/api:0.1.0\r\n"
        );
    }

    #[test]
    fn a_push_record_pins_only_its_own_image() {
        let record = format!("registry.lan:5000/gcd:0.1.0@{DIGEST}\n");
        assert_eq!(
            pinned(&record, "registry.lan:5000/gcd:0.1.0"),
            Some(format!("registry.lan:5000/gcd:0.1.0@{DIGEST}"))
        );
        assert_eq!(pinned(&record, "registry.lan:5000/gcd:0.2.0"), None);
        assert_eq!(pinned(&record, "other.lan/gcd:0.1.0"), None);
        assert_eq!(
            pinned(
                "registry.lan:5000/gcd:0.1.0@sha256:12",
                "registry.lan:5000/gcd:0.1.0"
            ),
            None
        );
        assert!(!is_digest(&DIGEST.to_uppercase()));
    }

    #[test]
    fn run_writes_the_copy_and_replaces_old_files() {
        let dir = std::env::temp_dir().join(format!("xtask-render-{}", std::process::id()));
        let root = dir.join("ws");
        fs::create_dir_all(root.join("k8s")).unwrap();
        fs::create_dir_all(root.join("dist/images")).unwrap();
        fs::write(
            root.join("Cargo.toml"),
            "[workspace.package]\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        fs::write(
            root.join("k8s/10-gcd.yaml"),
            "metadata:\n  labels:\n    app.kubernetes.io/version: \"0.1.0\"\nspec:\n  image: localhost/pi-gcd/gcd:0.1.0\n",
        )
        .unwrap();
        fs::write(
            root.join("k8s/20-api.yaml"),
            "spec:\n  image: localhost/pi-gcd/api:0.1.0\n",
        )
        .unwrap();
        fs::write(
            pushed_path(&root.join("dist"), "gcd"),
            format!("r.lan:5000/gcd:0.1.0@{DIGEST}\n"),
        )
        .unwrap();
        fs::create_dir_all(root.join("out")).unwrap();
        fs::write(root.join("out/05-stale.yaml"), "stale").unwrap();
        let opts = RenderOptions {
            registry: Some("r.lan:5000".into()),
            version: None,
            out: "out".into(),
        };
        run(&opts, &root).unwrap();
        let read = |name: &str| fs::read_to_string(root.join("out").join(name)).unwrap();
        assert_eq!(
            read("10-gcd.yaml"),
            format!(
                "metadata:\n  labels:\n    app.kubernetes.io/version: \"0.1.0\"\nspec:\n  image: r.lan:5000/gcd:0.1.0@{DIGEST}\n"
            )
        );
        assert_eq!(
            read("20-api.yaml"),
            "spec:\n  image: r.lan:5000/api:0.1.0\n"
        );
        assert!(!root.join("out/05-stale.yaml").exists());
        // Another version: the record no longer matches, the tag is used.
        let opts = RenderOptions {
            version: Some("0.2.0".into()),
            ..opts
        };
        run(&opts, &root).unwrap();
        assert!(read("10-gcd.yaml").contains("image: r.lan:5000/gcd:0.2.0\n"));
        assert!(read("10-gcd.yaml").contains("version: \"0.2.0\""));
        // Bad manifests: nothing written.
        fs::write(root.join("k8s/20-api.yaml"), "image: pi-gcd/api:0.1.0\n").unwrap();
        let fresh = RenderOptions {
            out: "fresh".into(),
            ..opts
        };
        assert!(run(&fresh, &root).is_err());
        assert!(!root.join("fresh").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
