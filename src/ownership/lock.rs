//! The owner lock: an exclusive lock on a small file next to the database, through std's
//! `File::try_lock` (`flock` on Unix, `LockFileEx` on Windows: a real lock everywhere).
//!
//! The operating system releases it when the holder dies, however it dies (`kill -9`,
//! `TerminateProcess` included), so a leftover lock file never blocks a new start: only a
//! live holder does.
//! DuckDB's own lock on the database file is separate; this one says which stride-vectors
//! process is in charge, even while DuckDB's lock is held by someone else.
//!
//! On Unix the file is created 0600 and must belong to us: `flock` needs only a read-only
//! open, so a lock file other users can read would let any of them hold ownership of our
//! database.

use std::fs::File;
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
        let file = crate::platform::open_private(path)?;
        if try_lock_exclusive(&file)? {
            Ok(Some(OwnerLock { _file: file }))
        } else {
            Ok(None)
        }
    }
}

/// `Ok(false)` when another holder has it. Both locks are tied to the open file (not the
/// process), so a second open conflicts even within one process.
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
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
        // The lock belongs to the open file (description, on Unix): a second open conflicts
        // even within one process, which is what lets this test stand in for two processes.
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
