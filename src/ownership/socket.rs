//! The owner's local socket: where relays reach the owner.
//!
//! It sits next to the database (`<db>.sock`) unless that path is too long for a Unix
//! socket address, in which case it lives in the runtime (or temp) directory under a name
//! derived from the database's canonical path. Only the owner binds it, and only while it
//! holds the owner lock, so a leftover socket file from a crash is removed before binding.
//! The file is made mode 0600 and every connection's peer uid is checked: another user's
//! process is refused even if the mode were loosened.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `sun_path` holds 108 bytes on Linux (104 on macOS) including the terminating NUL.
const MAX_SOCKET_PATH: usize = 100;

/// Where the lock file and the socket of `db` are.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    pub lock: PathBuf,
    pub socket: PathBuf,
}

impl Rendezvous {
    pub fn for_database(db: &Path) -> Rendezvous {
        let canonical = canonical_db_path(db);
        let lock = with_suffix(&canonical, ".owner.lock");
        let beside = with_suffix(&canonical, ".sock");
        let socket = if beside.as_os_str().len() <= MAX_SOCKET_PATH {
            beside
        } else {
            let digest = hex::encode(Sha256::digest(canonical.to_string_lossy().as_bytes()));
            runtime_dir().join(format!("stride-vectors-{}.sock", &digest[..24]))
        };
        Rendezvous { lock, socket }
    }
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

    /// Only processes of our own user may relay through us.
    pub fn same_user(stream: &UnixStream) -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        match stream.peer_cred() {
            Ok(cred) => cred.uid() == me,
            Err(_) => false,
        }
    }
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
        assert!(long.socket.as_os_str().len() <= MAX_SOCKET_PATH + 40);
        assert!(long
            .socket
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("stride-vectors-"));
        assert_eq!(
            long.socket,
            Rendezvous::for_database(&deep.join("v.duckdb")).socket,
            "stable name"
        );
    }
}
