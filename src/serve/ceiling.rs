//! A listener's grant ceiling: the most a job started through it may get — a network policy,
//! directories, limits — from `cell serve`'s own `--net`, `--dir`/`--dir-rw` and limit flags.
//! What a client asks for is narrowed to it, never widened: its policy is intersected with the
//! ceiling's (as `Network.restrict`), a directory must lie inside one of the ceiling's (opened
//! beneath its handle, writable only if that one is), and a limit above the ceiling's is
//! refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cell_proto::{CellError, JobDir, JobLimits, NetRule, Reason};

use crate::grants::{GrantedDir, Grants};
use crate::hostdir::{DirError, HostDir};
use crate::limits::Limits;
use crate::net::policy::NetPolicy;

/// One directory of the ceiling: its canonical host path and its handle.
#[derive(Clone, Debug)]
pub(crate) struct CeilingDir {
    pub host: PathBuf,
    pub dir: HostDir,
}

/// The most a job may get through one listener.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ceiling {
    /// `None`: no job gets a network.
    pub network: Option<NetPolicy>,
    pub dirs: Vec<CeilingDir>,
    pub limits: Limits,
    /// The daemon's `--remote` nodes its jobs may get, by name.
    pub remotes: Vec<String>,
}

fn denied(detail: String) -> CellError {
    CellError::new(Reason::Denied, detail)
}

/// What a job (or a service) asks for, to be narrowed to the ceiling.
pub(crate) struct Ask<'a> {
    /// Its Network's rules; `None`: no network.
    pub net: Option<&'a [NetRule]>,
    pub dirs: &'a [JobDir],
    pub limits: &'a JobLimits,
}

impl Ceiling {
    /// The grants and limits a job gets for `ask`: its network and directories narrowed to
    /// the ceiling, its limits at most the ceiling's. (The caller adds the Executor, which a
    /// cell guest pid0 always has.)
    ///
    /// # Errors
    /// The first part of `ask` the ceiling does not allow.
    pub(crate) fn narrow(&self, ask: &Ask<'_>) -> Result<(Grants, Limits), CellError> {
        let limits = self.limits(ask.limits)?;
        let network = self.network(ask.net)?;
        let dirs = ask
            .dirs
            .iter()
            .map(|d| self.dir(d))
            .collect::<Result<Vec<_>, _>>()?;
        let grants = Grants {
            network,
            dirs,
            ..Grants::default()
        };
        Ok((grants, limits))
    }

    /// Checks that a job may get the remote node `name`.
    ///
    /// # Errors
    /// `denied: …` when the ceiling does not list it.
    pub(crate) fn remote(&self, name: &str) -> Result<(), CellError> {
        if self.remotes.iter().any(|r| r == name) {
            return Ok(());
        }
        let listed = if self.remotes.is_empty() {
            "none".to_string()
        } else {
            self.remotes.join(", ")
        };
        Err(denied(format!(
            "remote {name:?} is not in this client's ceiling (its remotes: {listed})"
        )))
    }

    /// The policy a job gets for `asked`: none, or the intersection with the ceiling's.
    ///
    /// # Errors
    /// `denied: …` when the ceiling has no network; `limit: …` when the intersection would
    /// be too large.
    pub(crate) fn network(
        &self,
        asked: Option<&[NetRule]>,
    ) -> Result<Option<NetPolicy>, CellError> {
        let Some(rules) = asked else {
            return Ok(None);
        };
        let Some(ceiling) = &self.network else {
            return Err(denied(
                "this daemon grants no network (start it with --net RULE)".into(),
            ));
        };
        let policy = ceiling
            .try_intersect(&NetPolicy::new(rules.to_vec()))
            .map_err(|e| CellError::new(Reason::Limit, e.to_string()))?;
        Ok(Some(policy))
    }

    /// The ceiling directory containing the absolute host path `host`, and the rest of the
    /// path beneath it ("" for the directory itself).
    fn containing(&self, host: &str) -> Result<(&CeilingDir, String), CellError> {
        let path = Path::new(host);
        if !path.is_absolute() {
            return Err(CellError::new(
                Reason::BadRequest,
                format!("{host:?} is not an absolute host path"),
            ));
        }
        for d in &self.dirs {
            if let Ok(rest) = path.strip_prefix(&d.host) {
                let rest: Vec<_> = rest.iter().map(|c| c.to_string_lossy()).collect();
                return Ok((d, rest.join("/")));
            }
        }
        Err(denied(format!(
            "{} is not inside a directory this daemon grants ({})",
            crate::text::guest_text(host),
            self.shown_dirs()
        )))
    }

    fn shown_dirs(&self) -> String {
        if self.dirs.is_empty() {
            return "none: start it with --dir or --dir-rw".into();
        }
        let shown: Vec<String> = self
            .dirs
            .iter()
            .map(|d| format!("{} {}", d.dir.rights(), d.host.display()))
            .collect();
        shown.join(", ")
    }

    /// Opens the directory a job asked for, beneath the ceiling directory holding it.
    ///
    /// # Errors
    /// `denied: …` outside every ceiling directory or writable beyond it; `bad-request: …`
    /// for a relative path or a `..`; `io: …` when it cannot be opened.
    pub(crate) fn dir(&self, asked: &JobDir) -> Result<GrantedDir, CellError> {
        let (within, rest) = self.containing(&asked.host)?;
        if asked.writable && !within.dir.writable() {
            return Err(denied(format!(
                "{} is read-only in this daemon's grants (--dir, not --dir-rw)",
                within.host.display()
            )));
        }
        let dir = if rest.is_empty() {
            within.dir.clone()
        } else {
            within.dir.open(&rest).map_err(dir_error)?
        };
        let dir = if asked.writable { dir } else { dir.read_only() };
        Ok(GrantedDir {
            guest: asked.guest.clone(),
            dir,
        })
    }

    /// Reads a job's code from `host`, a file inside a ceiling directory.
    ///
    /// # Errors
    /// As [`Ceiling::dir`]; or it is larger than `max` bytes.
    /// Read on a blocking thread (up to `max-wasm-size` bytes): never on the supervisor's.
    pub(crate) async fn read_code(&self, host: &str, max: u64) -> Result<Vec<u8>, CellError> {
        let (within, rest) = self.containing(host)?;
        let dir = within.dir.clone();
        tokio::task::spawn_blocking(move || dir.read_file(&rest, max))
            .await
            .map_err(|e| CellError::new(Reason::Io, e))?
            .map_err(dir_error)
    }

    /// The limits of a job asking for `asked`: the ceiling's, or less.
    ///
    /// # Errors
    /// `limit: …` naming the first limit asked above the ceiling's.
    pub(crate) fn limits(&self, asked: &JobLimits) -> Result<Limits, CellError> {
        let c = &self.limits;
        let mut out = c.clone();
        fit(&mut out.max_memory, asked.max_memory, "max-memory")?;
        fit(
            &mut out.max_wasm_bytes,
            asked.max_wasm_bytes,
            "max-wasm-size",
        )?;
        fit(
            &mut out.max_message_bytes,
            asked.max_message_bytes,
            "max-message-size",
        )?;
        fit(
            &mut out.stderr_capture_bytes,
            asked.stderr_capture_bytes,
            "stderr-capture",
        )?;
        fit32(&mut out.max_procs, asked.max_procs, "max-procs")?;
        fit32(&mut out.max_depth, asked.max_depth, "max-depth")?;
        fit32(
            &mut out.max_outstanding_calls,
            asked.max_outstanding_calls,
            "max-outstanding-calls",
        )?;
        fit32(&mut out.max_sockets, asked.max_sockets, "max-sockets")?;
        if let Some(ms) = asked.timeout_ms {
            let want = Duration::from_millis(ms);
            if c.timeout.is_some_and(|t| want > t) {
                return Err(over(
                    "timeout",
                    ms,
                    c.timeout.map_or(0, |t| t.as_millis() as u64),
                ));
            }
            out.timeout = Some(want);
        }
        if let Some(fuel) = asked.fuel {
            let Some(most) = c.fuel else {
                return Err(CellError::new(
                    Reason::Limit,
                    "this daemon runs without fuel metering (start it with --fuel N)",
                ));
            };
            if fuel > most {
                return Err(over("fuel", fuel, most));
            }
            out.fuel = Some(fuel);
        }
        Ok(out)
    }
}

fn over(what: &str, asked: u64, most: u64) -> CellError {
    CellError::new(
        Reason::Limit,
        format!("{what} {asked} is above this daemon's ceiling of {most}"),
    )
}

fn fit(slot: &mut u64, asked: Option<u64>, what: &str) -> Result<(), CellError> {
    match asked {
        Some(a) if a > *slot => Err(over(what, a, *slot)),
        Some(a) => {
            *slot = a;
            Ok(())
        }
        None => Ok(()),
    }
}

fn fit32(slot: &mut u32, asked: Option<u32>, what: &str) -> Result<(), CellError> {
    let mut wide = u64::from(*slot);
    fit(&mut wide, asked.map(u64::from), what)?;
    *slot = wide as u32;
    Ok(())
}

fn dir_error(e: DirError) -> CellError {
    match e {
        DirError::NotBeneath(_) => CellError::new(Reason::BadRequest, e.to_string()),
        DirError::Io { .. } => CellError::new(Reason::Io, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cell_proto::parse_rule;

    fn ceiling(root: &Path, writable: bool) -> Ceiling {
        let host = root.canonicalize().unwrap();
        Ceiling {
            network: Some(NetPolicy::parse(["connect=127.0.0.1:1000-2000"]).unwrap()),
            dirs: vec![CeilingDir {
                dir: HostDir::open_root(&host, writable).unwrap(),
                host,
            }],
            limits: Limits {
                timeout: Some(Duration::from_secs(10)),
                ..Limits::default()
            },
            remotes: vec!["b".into()],
        }
    }

    #[test]
    fn only_listed_remotes_are_granted() {
        let dir = tempfile::tempdir().unwrap();
        let c = ceiling(dir.path(), false);
        assert!(c.remote("b").is_ok());
        let e = c.remote("c").unwrap_err();
        assert_eq!(e.reason, Reason::Denied);
        assert!(e.detail.contains("its remotes: b"), "{e}");
    }

    #[test]
    fn a_policy_only_narrows() {
        let dir = tempfile::tempdir().unwrap();
        let c = ceiling(dir.path(), false);
        assert!(c.network(None).unwrap().is_none());
        let wide = [parse_rule("connect=127.0.0.0/8:*").unwrap()];
        let got = c.network(Some(&wide)).unwrap().unwrap();
        let lo = "127.0.0.1".parse().unwrap();
        use crate::net::policy::NetOp;
        assert!(got.allows(NetOp::Connect, lo, 1500).allowed);
        assert!(!got.allows(NetOp::Connect, lo, 80).allowed);
        let none = Ceiling::default();
        assert_eq!(
            none.network(Some(&wide)).unwrap_err().reason,
            Reason::Denied
        );
    }

    #[test]
    fn directories_stay_inside_the_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("sub/out")).unwrap();
        let c = ceiling(dir.path(), false);
        let root = dir.path().canonicalize().unwrap();
        let ask = |host: PathBuf, writable| JobDir {
            host: host.display().to_string(),
            guest: "/d".into(),
            writable,
        };
        let sub = c.dir(&ask(root.join("sub"), false)).unwrap();
        assert!(!sub.dir.writable());
        assert_eq!(
            c.dir(&ask(root.join("sub"), true)).unwrap_err().reason,
            Reason::Denied
        );
        assert_eq!(
            c.dir(&ask("/etc".into(), false)).unwrap_err().reason,
            Reason::Denied
        );
        assert_eq!(
            c.dir(&ask(root.join("sub/out"), false)).unwrap_err().reason,
            Reason::Io
        );
        assert_eq!(
            c.dir(&ask(root.join("sub/../.."), false))
                .unwrap_err()
                .reason,
            Reason::BadRequest
        );
        assert_eq!(
            c.dir(&ask("relative".into(), false)).unwrap_err().reason,
            Reason::BadRequest
        );
    }

    #[tokio::test]
    async fn code_is_read_only_from_regular_files_inside() {
        let dir = tempfile::tempdir().unwrap();
        let c = ceiling(dir.path(), true);
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("ok.wasm"), b"\0asm").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("out.wasm")).unwrap();
        let fifo = root.join("fifo.wasm");
        let made = std::ffi::CString::new(fifo.display().to_string()).unwrap();
        // SAFETY: a valid C string; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(made.as_ptr(), 0o600) }, 0);
        let at = |n: &str| root.join(n).display().to_string();
        assert_eq!(c.read_code(&at("ok.wasm"), 100).await.unwrap(), b"\0asm");
        // A symlink out of the tree, a FIFO nobody writes (must not block), a file too big.
        assert_eq!(
            c.read_code(&at("out.wasm"), 100).await.unwrap_err().reason,
            Reason::Io
        );
        assert_eq!(
            c.read_code(&at("fifo.wasm"), 100).await.unwrap_err().reason,
            Reason::Io
        );
        assert_eq!(
            c.read_code(&at("ok.wasm"), 2).await.unwrap_err().reason,
            Reason::Io
        );
    }

    #[test]
    fn limits_above_the_ceiling_are_refused() {
        let c = ceiling(tempfile::tempdir().unwrap().path(), true);
        let ok = c
            .limits(&JobLimits {
                max_memory: Some(1 << 20),
                timeout_ms: Some(500),
                ..JobLimits::default()
            })
            .unwrap();
        assert_eq!(ok.max_memory, 1 << 20);
        assert_eq!(ok.timeout, Some(Duration::from_millis(500)));
        for asked in [
            JobLimits {
                max_memory: Some(u64::MAX),
                ..JobLimits::default()
            },
            JobLimits {
                timeout_ms: Some(60_000),
                ..JobLimits::default()
            },
            JobLimits {
                fuel: Some(1),
                ..JobLimits::default()
            },
            JobLimits {
                max_procs: Some(u32::MAX),
                ..JobLimits::default()
            },
        ] {
            assert_eq!(c.limits(&asked).unwrap_err().reason, Reason::Limit);
        }
    }
}
