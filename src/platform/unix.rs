//! Unix (Linux, macOS): the relays' socket, user identity, private directories and thread
//! priority.
//!
//! The socket file is made mode 0600 and the peer's uid is checked in both directions: the
//! owner refuses another user's relay, and a relay refuses an owner that is not our user,
//! even if a mode were loosened.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

use super::{ConnectError, Endpoint, Rendezvous};

/// The owner's Unix socket.
pub struct UnixSocket {
    listener: UnixListener,
}

impl Endpoint for UnixSocket {
    type Stream = UnixStream;

    fn listen(rendezvous: &Rendezvous) -> io::Result<Self> {
        let path = &rendezvous.address;
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(socket = %path.display(), "removed a stale socket file"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(UnixSocket { listener })
    }

    async fn accept(&mut self) -> io::Result<UnixStream> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            if peer_uid(&stream) == Some(user_id()) {
                return Ok(stream);
            }
            tracing::warn!(
                uid = peer_uid(&stream),
                "refused a relay connection from another user"
            );
        }
    }

    async fn connect(rendezvous: &Rendezvous) -> Result<(UnixStream, Option<u32>), ConnectError> {
        let path = &rendezvous.address;
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        if peer_uid(&stream) != Some(user_id()) {
            return Err(ConnectError::Foreign(format!(
                "refusing to relay to {}: the process listening there runs as uid {}, not as this user; nothing was sent to it",
                path.display(),
                peer_uid(&stream).map_or("unknown".to_string(), |u| u.to_string()),
            )));
        }
        let pid = stream
            .peer_cred()
            .ok()
            .and_then(|cred| cred.pid())
            .and_then(|pid| u32::try_from(pid).ok());
        Ok((stream, pid))
    }

    fn remove(rendezvous: &Rendezvous) {
        let _ = std::fs::remove_file(&rendezvous.address);
    }
}

/// The uid of the process at the other end, if the OS tells.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    stream.peer_cred().ok().map(|cred| cred.uid())
}

/// This process's effective user id.
pub fn user_id() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Create `dir` 0700 if missing, then check that it is a directory (not a link), ours, and
/// closed to group and others.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let me = user_id();
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
        Some(why) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing to use {} for the owner socket: it {why}", dir.display()),
        )),
        None => Ok(()),
    }
}

/// Open (creating it 0600 if missing) a file the owner keeps private, the owner lock: it
/// must be ours, and it is made 0600 if an older version left it readable to others
/// (`flock` needs only a read-only open, so a readable lock file would let anyone hold
/// ownership of our database).
pub fn open_private(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    let me = user_id();
    if meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {}, not to this user (uid {me}); remove it or run as its owner",
                path.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// How much lower the search threads' CPU priority is than the writer's (a nice value).
#[cfg(target_os = "linux")]
const SEARCH_NICE: libc::c_int = 10;

/// Make the calling thread yield the CPU to the rest of the process when cores are short.
/// Linux keeps a nice value per thread (+10 here); macOS a quality-of-service class per
/// thread (`utility`, below the default `user-initiated`).
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; no memory is shared.
    let rc = unsafe {
        // PRIO_PROCESS with a thread id sets that thread's nice value.
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, SEARCH_NICE)
    };
    #[cfg(target_os = "macos")]
    // SAFETY: sets the calling thread's own QoS class; no memory is shared.
    let rc = unsafe { libc::pthread_set_qos_class_self_np(libc::qos_class_t::QOS_CLASS_UTILITY, 0) };
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    let rc = 0;
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "lowering a search thread's priority");
    }
}

/// CPU time this process has used, user and system (`getrusage`).
pub fn process_cpu_time() -> Option<std::time::Duration> {
    // SAFETY: an all-zero rusage is a valid value; getrusage fills the one it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a pointer to a live rusage of the right type.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let time = |tv: libc::timeval| {
        std::time::Duration::from_secs(tv.tv_sec.max(0) as u64)
            + std::time::Duration::from_micros(tv.tv_usec.max(0) as u64)
    };
    Some(time(usage.ru_utime) + time(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_while_the_process_works() {
        let before = process_cpu_time().expect("getrusage");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = process_cpu_time().expect("getrusage");
        assert!(after > before, "{before:?} then {after:?} after 50 ms of work");
    }

    #[test]
    fn the_fallback_directory_must_be_ours_and_closed_to_others() {
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
