//! Windows: the relays' named pipe, user identity and thread priority.
//!
//! The pipe's name is derived from the database's canonical path
//! (`\\.\pipe\stride-vectors-<digest>`, see [`super::Rendezvous`]). The owner creates it
//! with `FILE_FLAG_FIRST_PIPE_INSTANCE` (if anyone already holds that name, the owner does
//! not serve under it), refuses remote clients, and gives it a security descriptor whose
//! owner is this user and whose only access entry is this user's: another user cannot
//! open it. A relay, before it sends anything, checks that the pipe's owner is its own
//! user, so a pipe squatted by someone else is refused as [`ConnectError::Foreign`].

use std::ffi::c_void;
use std::io;
use std::os::windows::io::AsRawHandle;
use std::path::Path;
use std::time::Duration;

use tokio::net::windows::named_pipe::{
    ClientOptions, NamedPipeClient, NamedPipeServer, PipeMode, ServerOptions,
};
use tokio_util::either::Either;
use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, ERROR_ACCESS_DENIED, ERROR_PIPE_BUSY, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, GetSecurityInfo,
    SDDL_REVISION_1, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    EqualSid, GetTokenInformation, TokenUser, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
    SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::Pipes::GetNamedPipeServerProcessId;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentThread, OpenProcessToken, SetThreadPriority, THREAD_PRIORITY_BELOW_NORMAL,
};

use super::{ConnectError, Endpoint, Rendezvous};

/// The owner's named pipe: the instance waiting for the next relay.
pub struct NamedPipe {
    name: String,
    next: NamedPipeServer,
}

impl Endpoint for NamedPipe {
    type Stream = PipeStream;

    fn listen(rendezvous: &Rendezvous) -> io::Result<Self> {
        let name = rendezvous.address.to_string_lossy().into_owned();
        let next = create_instance(&name, true)?;
        Ok(NamedPipe { name, next })
    }

    async fn accept(&mut self) -> io::Result<PipeStream> {
        self.next.connect().await?;
        // A new instance waits before this one is handed over, so a relay never finds the
        // name without a listener while the owner lives.
        let fresh = create_instance(&self.name, false)?;
        Ok(Either::Left(std::mem::replace(&mut self.next, fresh)))
    }

    async fn connect(rendezvous: &Rendezvous) -> Result<(PipeStream, Option<u32>), ConnectError> {
        let name = rendezvous.address.to_string_lossy().into_owned();
        let mut busy = 0;
        let client = loop {
            match ClientOptions::new().open(&name) {
                Ok(client) => break client,
                // Every instance is taken for an instant (another relay just connected).
                Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) && busy < 20 => {
                    busy += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) => {
                    return Err(ConnectError::Foreign(format!(
                        "refusing to relay to {name}: the pipe belongs to another user; nothing was sent to it"
                    )))
                }
                Err(e) => return Err(ConnectError::Unreachable(e.to_string())),
            }
        };
        match pipe_owned_by_us(&client) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ConnectError::Foreign(format!(
                    "refusing to relay to {name}: the pipe's owner is not this user; nothing was sent to it"
                )))
            }
            Err(e) => {
                return Err(ConnectError::Foreign(format!(
                    "refusing to relay to {name}: cannot read who owns the pipe ({e}); nothing was sent to it"
                )))
            }
        }
        let mut pid = 0u32;
        // SAFETY: a live pipe handle and a valid out pointer.
        let known = unsafe { GetNamedPipeServerProcessId(client.as_raw_handle() as HANDLE, &mut pid) } != 0;
        Ok((Either::Right(client), known.then_some(pid)))
    }

    fn remove(_rendezvous: &Rendezvous) {}
}

/// One end of a relay connection: the owner's side or a relay's.
pub type PipeStream = Either<NamedPipeServer, NamedPipeClient>;

/// A pipe instance open to this user only, local clients only.
fn create_instance(name: &str, first: bool) -> io::Result<NamedPipeServer> {
    let sid = user_sid_string()?;
    // Owner: this user; protected DACL with one entry: generic all for this user.
    let sddl: Vec<u16> = format!("O:{sid}D:P(A;;GA;;;{sid})\0").encode_utf16().collect();
    let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: a NUL-terminated UTF-16 string and a valid out pointer; the descriptor is freed
    // below with LocalFree, as the API asks.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut descriptor,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut attributes = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: descriptor,
        bInheritHandle: 0,
    };
    let mut options = ServerOptions::new();
    options
        .first_pipe_instance(first)
        .reject_remote_clients(true)
        .pipe_mode(PipeMode::Byte);
    // SAFETY: `attributes` and the descriptor it points to live until the call returns.
    let created = unsafe {
        options.create_with_security_attributes_raw(name, &mut attributes as *mut _ as *mut c_void)
    };
    // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW.
    unsafe { LocalFree(descriptor) };
    created
}

/// This process's user SID, as bytes we own, and a way to use it as a PSID.
struct UserSid(Vec<u8>);

impl UserSid {
    fn current() -> io::Result<UserSid> {
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: the current process's pseudo-handle and a valid out pointer.
        if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buffer = vec![0u8; 256];
        let mut needed = 0u32;
        // SAFETY: the buffer is as long as we say; `needed` is a valid out pointer.
        let ok = unsafe {
            GetTokenInformation(
                token,
                TokenUser,
                buffer.as_mut_ptr().cast(),
                buffer.len() as u32,
                &mut needed,
            )
        };
        let error = io::Error::last_os_error();
        // SAFETY: the token handle is ours and closed once.
        unsafe { CloseHandle(token) };
        if ok == 0 {
            return Err(error);
        }
        Ok(UserSid(buffer))
    }

    fn psid(&self) -> PSID {
        // SAFETY: the buffer holds a TOKEN_USER written by GetTokenInformation, whose SID
        // pointer points inside the same buffer.
        unsafe { (*(self.0.as_ptr() as *const TOKEN_USER)).User.Sid }
    }
}

/// The current user's SID in its string form (`S-1-5-21-…`).
fn user_sid_string() -> io::Result<String> {
    let sid = UserSid::current()?;
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: a valid SID and out pointer; the string is freed with LocalFree.
    if unsafe { ConvertSidToStringSidW(sid.psid(), &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a NUL-terminated UTF-16 string allocated by the call above.
    let string = unsafe {
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        String::from_utf16_lossy(std::slice::from_raw_parts(text, len))
    };
    // SAFETY: allocated by ConvertSidToStringSidW.
    unsafe { LocalFree(text.cast()) };
    Ok(string)
}

/// Whether the pipe at the other end of `client` is owned by this process's user.
fn pipe_owned_by_us(client: &NamedPipeClient) -> io::Result<bool> {
    let me = UserSid::current()?;
    let mut owner: PSID = std::ptr::null_mut();
    let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: a live handle and valid out pointers; the descriptor is freed with LocalFree,
    // and `owner` points into it.
    let rc = unsafe {
        GetSecurityInfo(
            client.as_raw_handle() as HANDLE,
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut descriptor,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    // SAFETY: both SIDs are valid for the duration of the call.
    let same = !owner.is_null() && unsafe { EqualSid(owner, me.psid()) } != 0;
    // SAFETY: allocated by GetSecurityInfo.
    unsafe { LocalFree(descriptor) };
    Ok(same)
}

/// Windows has no numeric user id; the SID stands for the user where it matters (the pipe).
pub fn user_id() -> u32 {
    0
}

/// The socket's private directory exists only on Unix: the pipe needs none.
pub fn ensure_private_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Open (creating it if missing) a file the owner keeps private, the owner lock. It sits in
/// a folder of the user's and Windows gives it that folder's access list, so there is
/// nothing to tighten.
pub fn open_private(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

/// Search threads run one step below normal priority, so the writer and the protocol get
/// the CPU first when cores are short.
pub fn lower_thread_priority() {
    // SAFETY: the calling thread's pseudo-handle; no memory is shared.
    if unsafe { SetThreadPriority(GetCurrentThread(), THREAD_PRIORITY_BELOW_NORMAL) } == 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "lowering a search thread's priority");
    }
}

/// CPU time this process has used, user and kernel (`GetProcessTimes`).
pub fn process_cpu_time() -> Option<std::time::Duration> {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessTimes};
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: the process's own pseudo-handle and four FILETIMEs the call fills.
    let ok = unsafe {
        GetProcessTimes(
            GetCurrentProcess(),
            &mut created,
            &mut exited,
            &mut kernel,
            &mut user,
        )
    };
    if ok == 0 {
        return None;
    }
    // FILETIME counts 100 ns intervals.
    let ticks = |f: FILETIME| (u64::from(f.dwHighDateTime) << 32) | u64::from(f.dwLowDateTime);
    Some(std::time::Duration::from_nanos(
        (ticks(kernel) + ticks(user)).saturating_mul(100),
    ))
}
