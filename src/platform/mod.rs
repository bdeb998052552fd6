//! What differs between operating systems, behind one small trait ([`Endpoint`]) and a few
//! functions, with one file per OS family: [`unix`] (Linux, macOS) and `windows`.
//!
//! It owns: where the owner lock and the relays' meeting point of a database are
//! ([`Rendezvous`]), the local transport relays reach the owner through (a Unix socket, or a
//! Windows named pipe) with its checks that both ends run as the same user, and the search
//! threads' lower CPU priority, the process's CPU time, and which TLS roots to trust. No `libc` or Win32 call lives
//! outside these files.
//!
//! It must not touch: ownership's policy (who owns, when to hand over: `ownership`), the
//! store or the protocol. It is a leaf: it imports nothing of the crate.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(unix)]
pub mod unix;
#[cfg(unix)]
pub use unix::{
    ensure_private_dir, lower_thread_priority, open_private, process_cpu_time, user_id,
    UnixSocket as Transport,
};

#[cfg(windows)]
pub mod windows;
#[cfg(windows)]
pub use windows::{
    ensure_private_dir, lower_thread_priority, open_private, process_cpu_time, user_id,
    NamedPipe as Transport,
};

/// `sun_path` holds 108 bytes on Linux (104 on macOS) including the terminating NUL.
const MAX_SOCKET_PATH: usize = 100;

/// The local transport between the owner and its relays on one OS.
pub trait Endpoint: Sized + Send + 'static {
    /// One connection, in both directions.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Start listening at `rendezvous.address`; the caller holds the owner lock, so anything
    /// left there by a dead owner may be replaced.
    fn listen(rendezvous: &Rendezvous) -> io::Result<Self>;

    /// The next relay that runs as our user; connections from anyone else are refused (and
    /// logged) here. An error is the listener's, not one connection's.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Reach the owner as a relay, with the owner's pid when the OS tells.
    /// [`ConnectError::Foreign`] when the process listening runs as another user: nothing
    /// has been sent to it.
    fn connect(
        rendezvous: &Rendezvous,
    ) -> impl Future<Output = Result<(Self::Stream, Option<u32>), ConnectError>> + Send;

    /// Forget the address when leaving (a socket file; nothing for a pipe, which goes with
    /// its last handle).
    fn remove(rendezvous: &Rendezvous);
}

/// Why a relay could not reach the owner.
#[derive(Debug)]
pub enum ConnectError {
    /// Nobody answers yet (the owner is starting, or just died): try again shortly.
    Unreachable(String),
    /// Someone answers, but as another user: we must not send them our data.
    Foreign(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Unreachable(e) | ConnectError::Foreign(e) => f.write_str(e),
        }
    }
}

/// Where the lock file and the relays' meeting point of `db` are.
///
/// On Unix the meeting point is a socket beside the database (`<db>.sock`) unless that path
/// is too long for a socket address; it then lives in `stride-vectors-<uid>/`, a directory
/// of ours (mode 0700, checked on every use) in the runtime (or temp) directory, or in
/// `/tmp` when even that would be too long (a long `$TMPDIR` on macOS), under a name derived
/// from the database's canonical path: in a shared directory another user could otherwise
/// bind that name first. On Windows it is the named pipe
/// `\\.\pipe\stride-vectors-<digest of the canonical path>`.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    pub lock: PathBuf,
    /// The socket's path, or the pipe's name.
    pub address: PathBuf,
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
        if cfg!(windows) {
            // Windows paths ignore case: every spelling of one file must meet at one pipe.
            let name = canonical.to_string_lossy().to_lowercase();
            return Rendezvous {
                lock,
                address: PathBuf::from(format!(r"\\.\pipe\stride-vectors-{}", &digest(&name)[..32])),
                private_dir: None,
            };
        }
        let beside = with_suffix(&canonical, ".sock");
        if beside.as_os_str().len() <= MAX_SOCKET_PATH {
            return Rendezvous {
                lock,
                address: beside,
                private_dir: None,
            };
        }
        let name = format!("{}.sock", &digest(&canonical.to_string_lossy())[..24]);
        let private = format!("stride-vectors-{}", user_id());
        let mut dir = runtime.join(&private);
        if dir.join(&name).as_os_str().len() > MAX_SOCKET_PATH {
            dir = Path::new("/tmp").join(&private);
        }
        Rendezvous {
            lock,
            address: dir.join(name),
            private_dir: Some(dir),
        }
    }

    /// Make sure the socket's directory is safe to use: beside the database it is the
    /// database's own; in the shared runtime directory it must be a real directory that
    /// belongs to us and that nobody else can enter. Refuses with the reason otherwise.
    pub fn check_private_dir(&self) -> io::Result<()> {
        match &self.private_dir {
            Some(dir) => ensure_private_dir(dir),
            None => Ok(()),
        }
    }
}

/// The certificate authorities TLS connections trust: the system's store, except on macOS,
/// where reading it needs Apple's Security framework (and so Apple's SDK to link, which a
/// build from Linux does not have): there Mozilla's list, compiled in (webpki-roots).
pub fn tls_roots() -> rustls::RootCertStore {
    #[cfg(not(target_os = "macos"))]
    {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            // A certificate the store cannot parse is skipped; the others still verify.
            let _ = roots.add(cert);
        }
        roots
    }
    #[cfg(target_os = "macos")]
    {
        rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }
    }
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn short_paths_sit_beside_the_database_and_long_ones_in_the_runtime_dir() {
        let dir = tempfile::tempdir().unwrap();
        let short = Rendezvous::for_database(&dir.path().join("v.duckdb"));
        assert!(short.address.to_string_lossy().ends_with("v.duckdb.sock"));
        assert!(short.lock.to_string_lossy().ends_with("v.duckdb.owner.lock"));
        let deep = dir.path().join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let long = Rendezvous::for_database(&deep.join("v.duckdb"));
        assert!(long.address.as_os_str().len() <= MAX_SOCKET_PATH);
        let private_dir = long
            .address
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        assert!(private_dir.starts_with("stride-vectors-"), "{private_dir}");
        assert_eq!(
            long.address,
            Rendezvous::for_database(&deep.join("v.duckdb")).address,
            "stable name"
        );
        assert_eq!(long.address.parent(), long.private_dir.as_deref());
        assert!(short.private_dir.is_none());
        // A runtime directory so long that the socket would not fit: `/tmp` then.
        let long_runtime = dir.path().join("r".repeat(90));
        let fallback = Rendezvous::for_database_in(&deep.join("v.duckdb"), &long_runtime);
        assert!(
            fallback.address.starts_with("/tmp"),
            "{}",
            fallback.address.display()
        );
        assert!(fallback.address.as_os_str().len() <= MAX_SOCKET_PATH);
    }

    #[cfg(windows)]
    #[test]
    fn every_spelling_of_one_database_meets_at_one_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let a = Rendezvous::for_database(&dir.path().join("V.duckdb"));
        let b = Rendezvous::for_database(&dir.path().join("v.DUCKDB"));
        assert_eq!(a.address, b.address);
        assert!(a
            .address
            .to_string_lossy()
            .starts_with(r"\\.\pipe\stride-vectors-"));
    }
}
