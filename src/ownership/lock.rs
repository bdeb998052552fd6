//! The owner lock: an exclusive `flock` on a small file next to the database.
//!
//! The operating system releases it when the holder dies, however it dies (`kill -9`
//! included), so a leftover lock file never blocks a new start: only a live holder does.
//! DuckDB's own lock on the database file is separate; this one says which stride-vectors
//! process is in charge, even while DuckDB's lock is held by someone else.

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
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
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
}
