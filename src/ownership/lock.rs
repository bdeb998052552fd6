//! The owner lock: an exclusive `flock` on a small file next to the database.
//!
//! The operating system releases it when the holder dies, however it dies (`kill -9`
//! included), so a leftover lock file never blocks a new start: only a live holder does.
//! DuckDB's own lock on the database file is separate; this one says which stride-vectors
//! process is in charge, even while DuckDB's lock is held by someone else.
//!
//! The file is created 0600 and must belong to us: `flock` needs only a read-only open, so a
//! lock file other users can read would let any of them hold ownership of our database.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Held for as long as the process owns the database. Dropping it releases the lock.
#[derive(Debug)]
pub struct OwnerLock {
    _file: File,
}

impl OwnerLock {
    /// Take the lock if nobody holds it; `Ok(None)` when another process does.
    pub fn try_acquire(path: &Path) -> io::Result<Option<OwnerLock>> {
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).read(true).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path)?;
        #[cfg(unix)]
        make_private(&file, path)?;
        if try_lock_exclusive(&file)? {
            Ok(Some(OwnerLock { _file: file }))
        } else {
            Ok(None)
        }
    }
}

#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// The lock file must be ours and readable by nobody else (an older version made it 0644).
#[cfg(unix)]
fn make_private(file: &File, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
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
    Ok(())
}

#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> io::Result<bool> {
    // Without a local socket there is no relay: the first process simply owns the file.
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.owner.lock");
        let first = OwnerLock::try_acquire(&path).unwrap();
        assert!(first.is_some());
        // flock locks belong to the open file description: a second open conflicts even
        // within one process, which is what lets this test stand in for two processes.
        assert!(OwnerLock::try_acquire(&path).unwrap().is_none());
        drop(first);
        assert!(OwnerLock::try_acquire(&path).unwrap().is_some());
    }

    #[cfg(unix)]
    #[test]
    fn the_lock_file_is_private_even_when_an_older_version_made_it_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.owner.lock");
        drop(OwnerLock::try_acquire(&path).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(OwnerLock::try_acquire(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
    }
}
