//! Carries out a plan, or prints it for `--dry-run` as shell a user could
//! paste. Progress goes to stderr; a dry run's plan goes to stdout.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::Error;
use crate::plan::{Cmd, Step};

pub fn log(message: &str) {
    eprintln!("==> {message}");
}

pub fn run_all(steps: &[Step], dry_run: bool) -> Result<(), Error> {
    for step in steps {
        if dry_run {
            if let Some(line) = describe(step) {
                println!("{line}");
            }
        } else {
            run(step)?;
        }
    }
    Ok(())
}

fn run(step: &Step) -> Result<(), Error> {
    match step {
        Step::Log(message) => log(message),
        Step::Run(cmd) => run_command(cmd)?,
        Step::Write {
            path,
            contents,
            executable,
        } => {
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, contents)
                .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
            if *executable {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                    .map_err(|e| Error::io(format!("chmod {}", tmp.display()), e))?;
            }
            rename(&tmp, path)?;
        }
        Step::Stage { from, to, mtime } => stage(from, to, *mtime)?,
        Step::Require { path, hint } => {
            if !path.is_file() {
                return Err(Error::MissingFile {
                    path: path.display().to_string(),
                    hint: hint.clone(),
                });
            }
        }
        Step::MakeDir(dir) => {
            fs::create_dir_all(dir).map_err(|e| Error::io(format!("mkdir {}", dir.display()), e))?
        }
        Step::RemoveDir(dir) => match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("removing {}", dir.display()), e));
            }
            _ => {}
        },
        Step::Rewrite { from, to, replace } => {
            let mut text = fs::read_to_string(from)
                .map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
            for (old, new) in replace {
                text = text.replace(old.as_str(), new);
            }
            let tmp = to.with_extension("tmp");
            fs::write(&tmp, text)
                .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
            rename(&tmp, to)?;
            fs::remove_file(from)
                .map_err(|e| Error::io(format!("removing {}", from.display()), e))?;
        }
        Step::RemoveFile(file) => remove_file(file)?,
        Step::RecordDigest {
            from,
            to,
            reference,
        } => {
            let text = fs::read_to_string(from)
                .map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
            let digest = pushed_digest(&text).ok_or_else(|| Error::MissingFile {
                path: from.display().to_string(),
                hint: format!("the push of {reference} reported no sha256 digest in it"),
            })?;
            let tmp = to.with_extension("tmp");
            fs::write(&tmp, format!("{reference}@{digest}\n"))
                .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
            rename(&tmp, to)?;
            remove_file(from)?;
        }
        Step::RemoveFromEach { dir, name } => {
            let entries = fs::read_dir(dir)
                .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
            for member in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
                let file = member.join(name);
                match fs::remove_file(&file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::io(format!("removing {}", file.display()), e));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn remove_file(file: &Path) -> Result<(), Error> {
    match fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("removing {}", file.display()), e))
        }
        _ => Ok(()),
    }
}

/// The digest a push reported: a digest file's whole text (buildah), or the
/// `containerimage.digest` of a buildx metadata file, which for a
/// multi-platform push is the index's.
pub fn pushed_digest(text: &str) -> Option<String> {
    let candidate = match text.split_once("\"containerimage.digest\"") {
        Some((_, rest)) => rest
            .trim_start()
            .strip_prefix(':')?
            .trim_start()
            .strip_prefix('"')?
            .split('"')
            .next()?,
        None => text.trim(),
    };
    crate::render::is_digest(candidate).then(|| candidate.to_string())
}

fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    fs::rename(from, to)
        .map_err(|e| Error::io(format!("moving {} to {}", from.display(), to.display()), e))
}

/// Copies a binary next to its place, stamps its time, then moves it in, so
/// a reader never sees half a file.
fn stage(from: &Path, to: &Path, mtime: u64) -> Result<(), Error> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("mkdir {}", dir.display()), e))?;
    }
    let tmp = to.with_extension("tmp");
    fs::copy(from, &tmp).map_err(|e| {
        Error::io(
            format!("copying {} (did the build make it?)", from.display()),
            e,
        )
    })?;
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
    fs::File::options()
        .write(true)
        .open(&tmp)
        .and_then(|f| f.set_modified(time))
        .map_err(|e| Error::io(format!("setting the time of {}", tmp.display()), e))?;
    rename(&tmp, to)
}

fn run_command(cmd: &Cmd) -> Result<(), Error> {
    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)));
    if cmd.quiet {
        command.stdout(Stdio::null());
    }
    if cmd.may_fail {
        command.stderr(Stdio::null());
    }
    let status = command.status().map_err(|source| Error::Spawn {
        program: cmd.program.clone(),
        source,
    })?;
    if status.success() || cmd.may_fail {
        return Ok(());
    }
    let status = match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".into(),
    };
    Err(Error::Command {
        command: shell_line(cmd),
        status,
        hint: cmd.hint.clone(),
    })
}

/// A step as a line of shell (or a comment); `None` for nothing to show.
pub fn describe(step: &Step) -> Option<String> {
    Some(match step {
        Step::Log(message) => format!("# {message}"),
        Step::Run(cmd) => shell_line(cmd),
        Step::Write {
            path,
            contents,
            executable,
        } => {
            let mode = if *executable {
                format!("\nchmod +x {}", quote(&path.display().to_string()))
            } else {
                String::new()
            };
            format!(
                "cat > {} <<'EOF'\n{contents}EOF{mode}",
                quote(&path.display().to_string())
            )
        }
        Step::Stage { from, to, mtime } => format!(
            "cp {} {}  # modification time set to @{mtime}",
            quote(&from.display().to_string()),
            quote(&to.display().to_string())
        ),
        Step::Require { path, .. } => format!("test -f {}", quote(&path.display().to_string())),
        Step::MakeDir(dir) => format!("mkdir -p {}", quote(&dir.display().to_string())),
        Step::RemoveDir(dir) => format!("rm -rf {}", quote(&dir.display().to_string())),
        Step::Rewrite { from, to, replace } => {
            let (from, to) = (from.display().to_string(), to.display().to_string());
            let edits: String = replace
                .iter()
                .map(|(old, new)| format!(" -e {}", quote(&format!("s|{old}|{new}|g"))))
                .collect();
            format!(
                "sed{edits} {} > {} && rm {}",
                quote(&from),
                quote(&to),
                quote(&from)
            )
        }
        Step::RemoveFile(file) => format!("rm -f {}", quote(&file.display().to_string())),
        Step::RecordDigest {
            from,
            to,
            reference,
        } => format!(
            "# record {reference}@<the digest in {}> in {}",
            from.display(),
            to.display()
        ),
        Step::RemoveFromEach { dir, name } => {
            format!(
                "rm -f {}/*/{}",
                quote(&dir.display().to_string()),
                quote(name)
            )
        }
    })
}

/// `ENV=value \` lines, then `program args`, quoted for a POSIX shell.
pub fn shell_line(cmd: &Cmd) -> String {
    // One variable a line: the daemonless build sets a dozen.
    let mut line: String = cmd
        .env
        .iter()
        .map(|(k, v)| format!("{k}={} \\\n", quote(v)))
        .collect();
    let words: Vec<String> = std::iter::once(&cmd.program)
        .chain(&cmd.args)
        .map(|w| quote(w))
        .collect();
    line.push_str(&words.join(" "));
    if cmd.quiet {
        line.push_str(" >/dev/null");
    }
    if cmd.may_fail {
        line.push_str(" 2>/dev/null || true");
    }
    line
}

/// Quotes a word for a POSIX shell only when it needs it.
pub fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=,@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_plain_words_and_protects_the_rest() {
        assert_eq!(
            quote("--platform=linux/arm/v7,linux/arm64"),
            "--platform=linux/arm/v7,linux/arm64"
        );
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("opt-level=\"z\""), "'opt-level=\"z\"'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn commands_print_as_shell() {
        let mut cmd = Cmd::new("buildah", ["manifest", "rm", "x y"]);
        cmd.env.push(("BUILDAH_ISOLATION".into(), "chroot".into()));
        cmd.quiet = true;
        cmd.may_fail = true;
        assert_eq!(
            shell_line(&cmd),
            "BUILDAH_ISOLATION=chroot \\\nbuildah manifest rm 'x y' >/dev/null 2>/dev/null || true"
        );
    }

    #[test]
    fn a_push_reports_its_digest_in_either_form() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(pushed_digest(&format!("{digest}\n")), Some(digest.clone()));
        let buildx = format!(
            "{{\n  \"buildx.build.ref\": \"b/b/x\",\n  \"containerimage.descriptor\": {{\"digest\": \"sha256:{}\"}},\n  \
             \"containerimage.digest\": \"{digest}\",\n  \"image.name\": \"r/gcd:0.1.0\"\n}}",
            "cd".repeat(32)
        );
        assert_eq!(pushed_digest(&buildx), Some(digest.clone()));
        assert_eq!(pushed_digest(""), None);
        assert_eq!(
            pushed_digest("{\"containerimage.digest\": \"sha256:12\"}"),
            None
        );
        assert_eq!(pushed_digest("{\"image.name\": \"x\"}"), None);

        let dir = std::env::temp_dir().join(format!("xtask-digest-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (from, to) = (dir.join("gcd.push.json"), dir.join("gcd.pushed"));
        fs::write(&from, &buildx).unwrap();
        let record = Step::RecordDigest {
            from: from.clone(),
            to: to.clone(),
            reference: "r.lan/gcd:0.1.0".into(),
        };
        run_all(std::slice::from_ref(&record), false).unwrap();
        assert_eq!(
            fs::read_to_string(&to).unwrap(),
            format!("r.lan/gcd:0.1.0@{digest}\n")
        );
        assert!(!from.exists());
        fs::write(&from, "{}").unwrap();
        assert!(matches!(
            run_all(&[record], false),
            Err(Error::MissingFile { .. })
        ));
        run_all(
            &[Step::RemoveFile(to.clone()), Step::RemoveFile(to.clone())],
            false,
        )
        .unwrap();
        assert!(!to.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn steps_run_for_real() {
        let dir = std::env::temp_dir().join(format!("xtask-exec-{}", std::process::id()));
        let (src, dst) = (dir.join("built"), dir.join("dist").join("t").join("gcd"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(&src, b"\x7fELF").unwrap();
        let steps = [
            Step::Write {
                path: dir.join("tool"),
                contents: "#!/bin/sh\nexit 3\n".into(),
                executable: true,
            },
            Step::Stage {
                from: src.clone(),
                to: dst.clone(),
                mtime: 1_700_000_000,
            },
            Step::Require {
                path: dst.clone(),
                hint: String::new(),
            },
        ];
        run_all(&steps, false).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"\x7fELF");
        let modified = fs::metadata(&dst).unwrap().modified().unwrap();
        assert_eq!(
            modified,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        let failing = Cmd::new(dir.join("tool").display().to_string(), ["arg"]);
        match run_all(&[Step::Run(failing.clone())], false) {
            Err(Error::Command { status, .. }) => assert_eq!(status, "exit status 3"),
            other => panic!("{other:?}"),
        }
        run_all(
            &[Step::Run(Cmd {
                may_fail: true,
                ..failing
            })],
            false,
        )
        .unwrap();
        let missing = Step::Require {
            path: dir.join("nope"),
            hint: "build it".into(),
        };
        assert!(matches!(
            run_all(&[missing], false),
            Err(Error::MissingFile { .. })
        ));
        // An SBOM moved out of a workspace member, the build's path taken out;
        // the same file in the other members removed.
        let member = |name: &str| {
            let member = dir.join("ws").join(name);
            fs::create_dir_all(&member).unwrap();
            fs::write(
                member.join("sbom.json"),
                format!("file:///b/{name} file:///b/x"),
            )
            .unwrap();
            member
        };
        let (gcd, ops) = (member("gcd"), member("ops"));
        fs::write(dir.join("ws").join("Cargo.toml"), "").unwrap();
        let steps = [
            Step::Rewrite {
                from: gcd.join("sbom.json"),
                to: dir.join("gcd.cdx.json"),
                replace: vec![("file:///b".into(), "file://.".into())],
            },
            Step::RemoveFromEach {
                dir: dir.join("ws"),
                name: "sbom.json".into(),
            },
        ];
        run_all(&steps, false).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("gcd.cdx.json")).unwrap(),
            "file://./gcd file://./x"
        );
        assert!(!gcd.join("sbom.json").exists() && !ops.join("sbom.json").exists());
        assert_eq!(
            describe(&steps[0]).unwrap(),
            format!(
                "sed -e 's|file:///b|file://.|g' {0}/ws/gcd/sbom.json > {0}/gcd.cdx.json && rm {0}/ws/gcd/sbom.json",
                dir.display()
            )
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
