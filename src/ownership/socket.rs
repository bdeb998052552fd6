//! The owner's local socket: where relays reach the owner.
//!
//! It sits next to the database (`<db>.sock`) unless that path is too long for a Unix
//! socket address, in which case it lives in `stride-vectors-<uid>/`, a directory of ours
//! (mode 0700, checked on every use) in the runtime (or temp) directory (or in `/tmp`
//! when even that would be too long, as a long `$TMPDIR` on macOS can be), under a name
//! derived from the database's canonical path: in a shared temporary directory another user
//! could otherwise bind that name first. Only the owner binds it, and only while it holds
//! the owner lock, so a leftover socket file from a crash is removed before binding.
//! The file is made mode 0600 and the peer's uid is checked in both directions: the owner
//! refuses another user's relay, and a relay refuses an owner that is not our user, even if
//! a mode were loosened.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `sun_path` holds 108 bytes on Linux (104 on macOS) including the terminating NUL.
const MAX_SOCKET_PATH: usize = 100;

/// Where the lock file and the socket of `db` are.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    pub lock: PathBuf,
    pub socket: PathBuf,
    /// The per-user directory holding the socket when it cannot sit beside the database.
    pub private_dir: Option<PathBuf>,
}

impl Rendezvous {
    pub fn for_database(db: &Path) -> Rendezvous {
        Rendezvous::for_database_in(db, &runtime_dir())
    }

    /// [`Rendezvous::for_database`], with `runtime` as the runtime directory.
    fn for_database_in(db: &Path, runtime: &Path) -> Rendezvous {
        let canonical = canonical_db_path(db);
        let lock = with_suffix(&canonical, ".owner.lock");
        let beside = with_suffix(&canonical, ".sock");
        if beside.as_os_str().len() <= MAX_SOCKET_PATH {
            return Rendezvous {
                lock,
                socket: beside,
                private_dir: None,
            };
        }
        let digest = hex::encode(Sha256::digest(canonical.to_string_lossy().as_bytes()));
        let name = format!("{}.sock", &digest[..24]);
        let private = format!("stride-vectors-{}", user_id());
        let mut dir = runtime.join(&private);
        if dir.join(&name).as_os_str().len() > MAX_SOCKET_PATH {
            dir = Path::new("/tmp").join(&private);
        }
        Rendezvous {
            lock,
            socket: dir.join(name),
            private_dir: Some(dir),
        }
    }

    /// Make sure the socket's directory is safe to use: beside the database it is the
    /// database's own; in the shared runtime directory it must be a real directory that
    /// belongs to us and that nobody else can enter. Refuses with the reason otherwise.
    pub fn check_private_dir(&self) -> std::io::Result<()> {
        match &self.private_dir {
            Some(dir) => ensure_private_dir(dir),
            None => Ok(()),
        }
    }
}

#[cfg(unix)]
fn user_id() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(not(unix))]
fn user_id() -> u32 {
    0
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The database may not exist yet: canonicalize its directory and keep the file name, so
/// that every process names the same file the same way.
fn canonical_db_path(db: &Path) -> PathBuf {
    let file = db
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("stride-vectors.duckdb"));
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match dir.canonicalize() {
        Ok(dir) => dir.join(file),
        Err(_) => db.to_path_buf(),
    }
}

fn runtime_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

#[cfg(unix)]
pub use unix::*;

#[cfg(unix)]
mod unix {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use tokio::net::{UnixListener, UnixStream};

    /// Bind the socket; the caller holds the owner lock, so a file already there is a
    /// leftover of a dead owner.
    pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(socket = %path.display(), "removed a stale socket file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }

    /// Only processes of our own user may relay through us, or own what we relay to.
    pub fn same_user(stream: &UnixStream) -> bool {
        peer_uid(stream) == Some(super::user_id())
    }

    /// The pid of the process at the other end, if the OS tells.
    pub fn peer_pid(stream: &UnixStream) -> Option<u32> {
        stream
            .peer_cred()
            .ok()?
            .pid()
            .and_then(|pid| u32::try_from(pid).ok())
    }

    /// The uid of the process at the other end, if the OS tells.
    pub fn peer_uid(stream: &UnixStream) -> Option<u32> {
        stream.peer_cred().ok().map(|cred| cred.uid())
    }

    /// Create `dir` 0700 if missing, then check that it is a directory (not a link), ours,
    /// and closed to group and others.
    pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = std::fs::symlink_metadata(dir)?;
        let me = super::user_id();
        let problem = if !meta.file_type().is_dir() {
            Some("is not a directory".to_string())
        } else if meta.uid() != me {
            Some(format!(
                "belongs to uid {}, not to this user (uid {me})",
                meta.uid()
            ))
        } else if meta.mode() & 0o077 != 0 {
            Some(format!("has mode {:o}; it must be 0700", meta.mode() & 0o777))
        } else {
            None
        };
        match problem {
            Some(why) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("refusing to use {} for the owner socket: it {why}", dir.display()),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(not(unix))]
fn ensure_private_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_paths_sit_beside_the_database_and_long_ones_in_the_runtime_dir() {
        let dir = tempfile::tempdir().unwrap();
        let short = Rendezvous::for_database(&dir.path().join("v.duckdb"));
        assert!(short.socket.to_string_lossy().ends_with("v.duckdb.sock"));
        assert!(short.lock.to_string_lossy().ends_with("v.duckdb.owner.lock"));
        let deep = dir.path().join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let long = Rendezvous::for_database(&deep.join("v.duckdb"));
        assert!(long.socket.as_os_str().len() <= MAX_SOCKET_PATH);
        let private_dir = long
            .socket
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        assert!(private_dir.starts_with("stride-vectors-"), "{private_dir}");
        assert_eq!(
            long.socket,
            Rendezvous::for_database(&deep.join("v.duckdb")).socket,
            "stable name"
        );
        assert_eq!(long.socket.parent(), long.private_dir.as_deref());
        assert!(short.private_dir.is_none());
        // A runtime directory so long that the socket would not fit: `/tmp` then.
        let long_runtime = dir.path().join("r".repeat(90));
        let fallback = Rendezvous::for_database_in(&deep.join("v.duckdb"), &long_runtime);
        assert!(
            fallback.socket.starts_with("/tmp"),
            "{}",
            fallback.socket.display()
        );
        assert!(fallback.socket.as_os_str().len() <= MAX_SOCKET_PATH);
    }

    #[cfg(unix)]
    #[test]
    fn the_fallback_directory_must_be_ours_and_closed_to_others() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("stride-vectors-test");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("has mode 777; it must be 0700"), "{err}");
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }
}
