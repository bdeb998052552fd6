//! Many stride-vectors processes on one file: one owner, relays for the rest, take-over
//! when the owner dies, stale leftovers, a foreign DuckDB holder, and the socket's guard.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ollama::MockOllama;
use common::*;
use serde_json::{json, Value};

/// Close every client at once (an owner that leaves first hands the file to a relay that is
/// leaving too; each must still exit cleanly).
async fn stop_all(servers: Vec<Arc<Server>>) {
    let stops = servers
        .into_iter()
        .map(|s| Arc::into_inner(s).expect("no other handle").stop());
    futures::future::join_all(stops).await;
}

/// One acknowledged upsert.
#[derive(Clone)]
struct Ack {
    id: String,
    value: f32,
    invoked: Instant,
    acked: Instant,
}

async fn start_group(db: &std::path::Path, mock: &MockOllama, n: usize) -> Vec<Arc<Server>> {
    let mut servers = Vec::new();
    for i in 0..n {
        let s = start_with(command_with_ollama(db, &mock.url, &["--debounce-ms", "100"])).await;
        let stats = wait_for_stats(&s, 30, |st| {
            st["role"] == json!(if i == 0 { "owner" } else { "relay" })
        })
        .await;
        assert_eq!(
            stats["role"],
            json!(if i == 0 { "owner" } else { "relay" }),
            "process {i}: {stats}"
        );
        servers.push(Arc::new(s));
    }
    servers
}

/// Client `task` makes `calls` mixed calls; returns its acknowledged upserts. Stops early
/// (without failing) once `stop_on_error` is set and a call fails: that client's own
/// server was killed.
async fn mixed_load(
    s: Arc<Server>,
    task: usize,
    calls: usize,
    done: Arc<AtomicUsize>,
    own_server_killed: bool,
) -> Vec<Ack> {
    let mut acks = Vec::new();
    for i in 0..calls {
        let kind = i % 5;
        let invoked = Instant::now();
        let (tool, args, ack) = match kind {
            0 | 1 => {
                let id = if kind == 0 {
                    format!("shared-{}", i % 7)
                } else {
                    format!("c{task}-{i}")
                };
                let value = (task * 10_000 + i + 1) as f32;
                let args = json!({"index": "goals", "create_index": {"dimension": 4}, "vectors": [{"id": id, "vector": [value, 1, 2, 3]}]});
                ("upsert", args, Some((id, value)))
            }
            2 => (
                "embed",
                json!({"index": "advice_history", "documents": [{"id": format!("a{}", i % 11), "text": format!("tip {task} {i}")}]}),
                None,
            ),
            3 => (
                "search",
                json!({"index": "goals", "vector": [1, 1, 2, 3], "top_k": 3}),
                None,
            ),
            _ => ("stats", json!({}), None),
        };
        let result = match tokio::time::timeout(
            Duration::from_secs(60),
            s.client.call_tool(
                rmcp::model::CallToolRequestParams::new(tool)
                    .with_arguments(args.as_object().unwrap().clone()),
            ),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if own_server_killed => {
                let _ = e;
                return acks;
            }
            Ok(Err(e)) => panic!("client {task} call {i} {tool}: protocol error {e}"),
            Err(_) => panic!("client {task} call {i} {tool}: no answer in 60 s"),
        };
        let search_before_index = tool == "search" && text(&result).contains("does not exist");
        if result.is_error == Some(true) && !search_before_index {
            panic!("client {task} call {i} {tool} {args}: {}", text(&result));
        }
        if let Some((id, value)) = ack {
            acks.push(Ack {
                id,
                value,
                invoked,
                acked: Instant::now(),
            });
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    acks
}

/// The stored value of every id is one that was acknowledged, and no write to that id
/// began after it was acknowledged.
fn assert_last_acknowledged_wins(db: &std::path::Path, acks: &[Ack]) {
    let rows = rows_in_file(db, "goals");
    let ids: std::collections::BTreeSet<&str> = acks.iter().map(|a| a.id.as_str()).collect();
    for id in ids {
        let stored = rows
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged id {id} is missing"))
            .0[0];
        let writes: Vec<&Ack> = acks.iter().filter(|a| a.id == id).collect();
        let winner = writes
            .iter()
            .find(|a| a.value == stored)
            .unwrap_or_else(|| panic!("{id}: stored {stored} was never acknowledged"));
        for w in &writes {
            assert!(
                w.value == winner.value || w.invoked <= winner.acked,
                "{id}: {} began after {} was acknowledged",
                w.value,
                winner.value
            );
        }
    }
}

#[tokio::test]
async fn four_processes_share_one_file_with_zero_errors() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let servers = start_group(&db.path, &mock, 4).await;
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = servers
        .iter()
        .enumerate()
        .map(|(t, s)| tokio::spawn(mixed_load(s.clone(), t, 500, done.clone(), false)))
        .collect();
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.expect("client task"));
    }
    assert_eq!(done.load(Ordering::SeqCst), 2000);
    let owner_stats = servers[0].ok("stats", json!({})).await;
    assert_eq!(owner_stats["relays_connected"], json!(3));
    let relay_stats = servers[1].ok("stats", json!({})).await;
    assert_eq!(relay_stats["owner_pid"], owner_stats["pid"]);
    assert_ne!(relay_stats["pid"], owner_stats["pid"]);
    servers[0].ok("flush", json!({})).await;
    stop_all(servers).await;
    assert_last_acknowledged_wins(&db.path, &acks);
}

#[tokio::test]
async fn killing_the_owner_mid_load_loses_nothing_and_a_relay_takes_over() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let mut servers = start_group(&db.path, &mock, 4).await;
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (t, s) in servers.iter().enumerate() {
        tasks.push(tokio::spawn(mixed_load(s.clone(), t, 400, done.clone(), t == 0)));
    }
    while done.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let owner = servers.remove(0);
    let child_pid = owner.child.id().expect("owner pid");
    let server_pid = owner.ok("stats", json!({})).await["pid"].as_u64().unwrap() as u32;
    // SIGKILL on Unix, TerminateProcess (taskkill /F) on Windows: no chance to clean up.
    kill_hard(child_pid, server_pid);
    let killed_at = Instant::now();
    let first_ok = servers[1].ok("list_indexes", json!({})).await;
    let recovery = killed_at.elapsed();
    assert!(first_ok["indexes"].is_array());
    eprintln!("owner killed: first successful relayed call after {recovery:?}");

    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.expect("client task"));
    }
    let roles: Vec<Value> = {
        let mut r = Vec::new();
        for s in &servers {
            r.push(s.ok("stats", json!({})).await["role"].clone());
        }
        r
    };
    assert_eq!(
        roles.iter().filter(|r| **r == json!("owner")).count(),
        1,
        "exactly one new owner: {roles:?}"
    );
    servers[0].ok("flush", json!({})).await;
    drop(owner);
    stop_all(servers).await;
    assert_last_acknowledged_wins(&db.path, &acks);
}

#[tokio::test]
async fn stale_socket_and_lock_files_do_not_block_a_new_owner() {
    let db = temp_db();
    let s = start(&db.path).await;
    s.ok("create_index", json!({"index": "goals", "dimension": 2}))
        .await;
    let sock = db.path.with_file_name("stride-vectors.duckdb.sock");
    let lock = db.path.with_file_name("stride-vectors.duckdb.owner.lock");
    assert!(sock.exists() && lock.exists());
    s.kill9().await;
    assert!(sock.exists(), "kill -9 leaves the socket file behind");

    let started = Instant::now();
    let s = start(&db.path).await;
    let stats = s.ok("stats", json!({})).await;
    assert_eq!(stats["role"], json!("owner"));
    eprintln!("owner after a crash in {:?}", started.elapsed());
    assert_eq!(
        s.ok("describe_index", json!({"index": "goals"})).await["dimension"],
        json!(2)
    );
    s.stop().await;

    // Leftovers that never were a socket or a lock at all.
    let _ = std::fs::remove_file(&sock);
    std::fs::write(&sock, b"junk").unwrap();
    let s = start(&db.path).await;
    assert_eq!(s.ok("stats", json!({})).await["role"], json!("owner"));
    s.stop().await;
}

#[tokio::test]
async fn a_foreign_duckdb_holder_is_named_and_waited_out() {
    let db = temp_db();
    let foreign =
        duckdb::Connection::open(&db.path).expect("the test holds the file, as the DuckDB CLI would");
    let s = start(&db.path).await;
    let tools = s
        .client
        .list_all_tools()
        .await
        .expect("tools/list answers while the file is locked");
    assert!(tools.len() >= 10);
    let err = s.err("list_indexes", json!({})).await;
    assert!(
        err.contains("locked by another program that is not stride-vectors"),
        "{err}"
    );
    assert!(
        err.contains(&format!("PID {}", std::process::id())),
        "names the holder's PID: {err}"
    );
    drop(foreign);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.call("list_indexes", json!({})).await;
        if r.is_error != Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "never became the owner: {}", text(&r));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn the_socket_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let db = temp_db();
    let s = start(&db.path).await;
    s.ok("stats", json!({})).await;
    let sock = db.path.with_file_name("stride-vectors.duckdb.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot run a second user here; the 0600 mode above is the guard checked");
        s.stop().await;
        return;
    }
    // Open the mode wide so that only the peer-uid check stands between another user and
    // the owner, then knock as user `nobody` (65534).
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(db.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.settimeout(5)
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"0"}}}\n')
    data = s.recv(4096)
except (BrokenPipeError, ConnectionResetError):
    data = b""
print("ANSWER" if data else "CLOSED")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&sock)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3 as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CLOSED"),
        "another user's connection must be refused: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.ok("stats", json!({})).await["relays_connected"], json!(0));
    s.stop().await;
}

#[tokio::test]
async fn the_lock_file_is_private_and_a_relay_never_talks_to_another_users_owner() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    let db = temp_db();
    let lock_path = db.path.with_file_name("stride-vectors.duckdb.owner.lock");
    let sock = db.path.with_file_name("stride-vectors.duckdb.sock");
    {
        let s = start(&db.path).await;
        s.ok("stats", json!({})).await;
        let mode = std::fs::metadata(&lock_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "lock file mode: anyone who can read it can flock it");
        s.stop().await;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot run a second user here; the 0600 modes are the guard checked");
        return;
    }
    // We hold the owner lock, and user `nobody` listens where the owner's socket would be:
    // a new process becomes a relay, and must refuse to send that listener anything.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock_path)
        .unwrap();
    // SAFETY: flock on a descriptor we own for the duration of the call.
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    std::fs::set_permissions(db.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = r#"
import socket, sys, os
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
s.listen(8)
s.settimeout(15)
c, _ = s.accept()
c.settimeout(3)
try:
    data = c.recv(4096)
except socket.timeout:
    data = b"timeout"
print("GOT", len(data), data[:40])
"#;
    let listener = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&sock)
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 as nobody");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "the foreign listener never bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = start(&db.path).await;
    let err = s.err("list_indexes", json!({})).await;
    assert!(
        err.contains("refusing to relay") && err.contains("uid 65534"),
        "a relay must say why it will not talk to that owner: {err}"
    );
    let out = listener.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("GOT 0 "),
        "the relay sent the foreign owner data: {said}"
    );
    s.stop().await;
    drop(lock);
}

use std::os::unix::process::CommandExt;

/// Live processes on one file, each with its own client; load tasks pick one per call.
struct Pool {
    live: std::sync::Mutex<Vec<Arc<Server>>>,
    /// Calls answered so far, by every load task.
    answered: AtomicUsize,
}

impl Pool {
    /// Wait until `n` more calls have been answered: the load is running, through whatever
    /// happened last.
    async fn calls_answered(&self, n: usize) {
        let target = self.answered.load(Ordering::SeqCst) + n;
        while self.answered.load(Ordering::SeqCst) < target {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn pick(&self, n: usize) -> Arc<Server> {
        let live = self.live.lock().unwrap();
        live[n % live.len()].clone()
    }
}

/// Upserts of one id never overlap (each client owns its ids), so the stored row of every
/// id must be that client's last acknowledged upsert. Returns the acknowledged upserts and
/// how long each call took, with when it started.
async fn pooled_load(
    pool: Arc<Pool>,
    task: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<Ack>, Vec<(Instant, Duration)>) {
    let mut acks = Vec::new();
    let mut timings = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let s = pool.pick(task + i);
        let value = (task * 100_000 + i) as f32;
        let id = format!("t{task}-{}", i % 13);
        let (tool, args) = match i % 6 {
            0..=2 => (
                "upsert",
                json!({"index": "goals", "create_index": {"dimension": 4}, "vectors": [{"id": id, "vector": [value, 1, 2, 3], "metadata": {"v": value}}]}),
            ),
            3 => (
                "embed",
                json!({"index": "advice_history", "documents": [{"id": format!("e{task}-{}", i % 5), "text": format!("tip {task} {i}")}]}),
            ),
            4 => (
                "search",
                json!({"index": "goals", "vector": [1, 1, 2, 3], "top_k": 3}),
            ),
            _ => (
                "update",
                json!({"index": "goals", "id": format!("t{task}-{}", (i + 7) % 13), "metadata": {"seen": i}, "if_missing": "ignore"}),
            ),
        };
        let invoked = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(60),
            s.client.call_tool(
                rmcp::model::CallToolRequestParams::new(tool)
                    .with_arguments(args.as_object().unwrap().clone()),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("client {task} call {i} {tool}: no answer in 60 s"))
        .unwrap_or_else(|e| panic!("client {task} call {i} {tool}: protocol error {e}"));
        let early_search = tool == "search" && text(&result).contains("does not exist");
        assert!(
            result.is_error != Some(true) || early_search,
            "client {task} call {i} {tool} {args}: {}",
            text(&result)
        );
        timings.push((invoked, invoked.elapsed()));
        pool.answered.fetch_add(1, Ordering::SeqCst);
        if tool == "upsert" {
            acks.push(Ack {
                id,
                value,
                invoked,
                acked: Instant::now(),
            });
        }
    }
    (acks, timings)
}

/// The owner process's client leaves (stdin closed) while two other processes' clients keep
/// writing, embedding, updating and searching through them, five times in a row, each time
/// replaced by a fresh process. No client sees an error, every acknowledged upsert is
/// there, the last one of each id wins, and each owner exits at once (it used to wait for
/// its relays to leave, which in this test is never).
#[tokio::test]
async fn an_owner_whose_client_leaves_hands_over_mid_load_without_a_single_error() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let servers = start_group(&db.path, &mock, 3).await;
    let pool = Arc::new(Pool {
        live: std::sync::Mutex::new(servers),
        answered: AtomicUsize::new(0),
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..2)
        .map(|t| tokio::spawn(pooled_load(pool.clone(), t, stop.clone())))
        .collect();
    let mut hand_overs = Vec::new();
    for round in 0..5 {
        pool.calls_answered(100).await;
        // The owner, found by asking any process; its client stops using it, waits for
        // its own calls to end (as an app does before close()), and leaves.
        let owner_pid = {
            let any = pool.pick(round);
            any.ok("stats", json!({})).await["owner_pid"].as_u64().unwrap()
        };
        let owner = {
            // Each process's own pid as it reports it (under Wine not the child's Linux pid).
            let live: Vec<Arc<Server>> = pool.live.lock().unwrap().clone();
            let mut found = None;
            for s in live {
                if s.ok("stats", json!({})).await["pid"] == json!(owner_pid) {
                    found = Some(s);
                }
            }
            let found = found.expect("the owner is one of ours");
            let mut live = pool.live.lock().unwrap();
            let at = live
                .iter()
                .position(|s| Arc::ptr_eq(s, &found))
                .expect("still in the pool");
            drop(found);
            live.remove(at)
        };
        while Arc::strong_count(&owner) > 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let left = Instant::now();
        Arc::into_inner(owner).unwrap().stop().await;
        let closed_in = left.elapsed();
        hand_overs.push((left, Instant::now()));
        eprintln!("round {round}: owner pid {owner_pid} closed in {closed_in:?}");
        let fresh = start_with(command_with_ollama(
            &db.path,
            &mock.url,
            &["--debounce-ms", "100"],
        ))
        .await;
        pool.live.lock().unwrap().push(Arc::new(fresh));
    }
    pool.calls_answered(100).await;
    stop.store(true, Ordering::SeqCst);
    let (mut acks, mut timings) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, d) = t.await.expect("client task");
        acks.extend(a);
        timings.extend(d);
    }
    let mut crossing: Vec<Duration> = timings
        .iter()
        .filter(|(start, took)| {
            hand_overs
                .iter()
                .any(|(l, c)| *start <= *c && *start + *took >= *l)
        })
        .map(|(_, took)| *took)
        .collect();
    crossing.sort();
    let p99 = crossing[(crossing.len() * 99 / 100).min(crossing.len() - 1)];
    eprintln!(
        "{} calls, {} crossed a hand-over: p99 {p99:?}, max {:?}",
        timings.len(),
        crossing.len(),
        crossing.last().unwrap()
    );
    let servers: Vec<_> = std::mem::take(&mut *pool.live.lock().unwrap());
    servers[0].ok("flush", json!({})).await;
    stop_all(servers).await;
    assert_last_acknowledged_wins(&db.path, &acks);
    let stored = rows_in_file(&db.path, "advice_history");
    assert_eq!(stored.len(), 10, "every embedded id: {:?}", stored.keys());
}

/// `stats` once it answers without error and `done` holds (within 30 s).
async fn stats_once_answered(s: &Server, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.call("stats", json!({})).await;
        if r.is_error != Some(true) {
            let stats = r.structured_content.clone().expect("structured stats");
            if done(&stats) {
                return stats;
            }
        }
        assert!(Instant::now() < deadline, "stats never settled: {}", text(&r));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGSTOP the owner: a relay answers within its owner timeout, naming the owner's pid,
/// and keeps answering so at once; SIGCONT, and the relay serves again; SIGKILL while
/// stopped, and the relay takes over with everything acknowledged.
#[tokio::test]
async fn a_frozen_owner_is_named_within_the_bound_and_a_relay_takes_over_when_it_dies() {
    let db = temp_db();
    let owner = start(&db.path).await;
    assert_eq!(owner.ok("stats", json!({})).await["role"], json!("owner"));
    let mut cmd = command(&db.path);
    cmd.args(["--owner-timeout-ms", "1500"]);
    let relay = start_with(cmd).await;
    let stats = wait_for_stats(&relay, 30, |st| st["role"] == "relay").await;
    // The owner's pid as it reports it (under Wine not its child's Linux pid, which the
    // signals go to).
    let pid = owner.ok("stats", json!({})).await["pid"].as_u64().unwrap();
    let child_pid = owner.child.id().unwrap();
    assert_eq!(stats["owner_pid"], json!(pid));
    assert!(
        stats["owner_heartbeat_ms_ago"].as_u64().unwrap() < 1500,
        "{stats}"
    );
    let upsert = |id: &str, x: f32| json!({"index": "goals", "create_index": {"dimension": 2}, "vectors": [{"id": id, "vector": [x, 1]}]});
    relay.ok("upsert", upsert("before", 1.0)).await;

    let signal = |sig| {
        // SAFETY: a signal to our own child process.
        assert_eq!(unsafe { libc::kill(child_pid as i32, sig) }, 0);
    };
    signal(libc::SIGSTOP);
    let asked = Instant::now();
    let error = relay.err("upsert", upsert("frozen", 2.0)).await;
    let waited = asked.elapsed();
    eprintln!("a stopped owner was reported after {waited:?}: {error}");
    assert!(
        error.contains(&format!("(pid {pid}) does not respond")),
        "{error}"
    );
    assert!(
        waited >= Duration::from_millis(1000),
        "it waited for the owner first: {waited:?}"
    );
    let again = Instant::now();
    let error = relay.err("stats", json!({})).await;
    assert!(
        error.contains(&format!("(pid {pid}) does not respond")),
        "{error}"
    );
    assert!(
        again.elapsed() < waited,
        "once silent, at once: {:?}",
        again.elapsed()
    );

    signal(libc::SIGCONT);
    let stats = stats_once_answered(&relay, |st| st["role"] == "relay").await;
    assert!(
        stats["owner_heartbeat_ms_ago"].as_u64().unwrap() < 1500,
        "{stats}"
    );
    relay.ok("upsert", upsert("resumed", 3.0)).await;

    signal(libc::SIGSTOP);
    signal(libc::SIGKILL);
    let stats = stats_once_answered(&relay, |st| st["role"] == "owner").await;
    assert_eq!(stats["pid"], stats["owner_pid"]);
    let fetched = relay
        .ok("fetch", json!({"index": "goals", "ids": ["before", "resumed"]}))
        .await;
    assert_eq!(fetched["missing"], json!([]), "{fetched}");
    drop(owner);
    relay.stop().await;
}

/// A server whose writer panics on a write to index `boom` (the test-only fault).
async fn start_panicking_on_boom(db: &std::path::Path) -> Server {
    let mut cmd = command(db);
    cmd.args(["--test-writer-panic-on", "boom"]);
    start_with(cmd).await
}

/// An upsert of one row of dimension 2, creating the index on first use.
fn upsert(index: &str, id: &str) -> Value {
    json!({"index": index, "create_index": {"dimension": 2}, "vectors": [{"id": id, "vector": [1, 0]}]})
}

/// A writer that panics (a test-only fault: `--test-writer-panic-on boom`) is reported by the
/// call that met it and by `stats`; the process gives the file up, the other process takes
/// ownership with every acknowledged write, and the first one goes on serving its client
/// through it.
#[tokio::test]
async fn a_writer_panic_is_reported_and_another_process_takes_the_file_over() {
    let db = temp_db();
    let a = start_panicking_on_boom(&db.path).await;
    assert_eq!(a.ok("stats", json!({})).await["role"], json!("owner"));
    let b = start(&db.path).await;
    let b_pid = wait_for_stats(&b, 30, |st| st["role"] == "relay").await["pid"].clone();
    b.ok("upsert", upsert("kept", "x")).await;

    let error = a.err("upsert", upsert("boom", "y")).await;
    assert!(
        error.starts_with("store failed: the writer thread panicked: test fault: a write to index \"boom\""),
        "{error}"
    );
    let b_stats = stats_once_answered(&b, |st| st["role"] == "owner").await;
    assert_eq!(b_stats["pid"], b_pid);
    assert!(b_stats.get("store_failure").is_none(), "{b_stats}");
    let a_stats = stats_once_answered(&a, |st| st["role"] == "relay").await;
    assert_eq!(a_stats["owner_pid"], b_stats["pid"]);
    let failure = a_stats["store_failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("test fault: a write to index \"boom\""),
        "{a_stats}"
    );
    let fetched = a.ok("fetch", json!({"index": "kept", "ids": ["x"]})).await;
    assert_eq!(fetched["missing"], json!([]), "{fetched}");
    let list = a.ok("list_indexes", json!({})).await;
    assert_eq!(
        index_shapes(&list)["indexes"].as_array().unwrap().len(),
        1,
        "nothing of the failed call: {list}"
    );
    b.stop().await;
    a.stop().await;
}

/// Alone on its file, a process whose writer panicked opens the file again itself, once
/// every connection of the broken store is gone: what was acknowledged is there, and
/// writes go on.
#[tokio::test]
async fn alone_after_a_writer_panic_the_process_opens_the_file_again() {
    let db = temp_db();
    let a = start_panicking_on_boom(&db.path).await;
    a.ok("upsert", upsert("kept", "x")).await;
    let error = a.err("upsert", upsert("boom", "y")).await;
    assert!(
        error.starts_with("store failed: the writer thread panicked"),
        "{error}"
    );
    let stats = stats_once_answered(&a, |st| st["role"] == "owner").await;
    assert!(
        stats["store_failure"]
            .as_str()
            .is_some_and(|f| f.contains("test fault")),
        "{stats}"
    );
    a.ok("upsert", upsert("kept", "z")).await;
    let fetched = a.ok("fetch", json!({"index": "kept", "ids": ["x", "z"]})).await;
    assert_eq!(fetched["missing"], json!([]), "{fetched}");
    a.stop().await;
    let rows = rows_in_file(&db.path, "kept");
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        ["x", "z"],
        "both writes are in the file"
    );
}

/// Every task an owner and a relay start (ownership's supervisor, accept loop, relay
/// connection, heartbeat; the pipeline's worker and follower) ends when its process stops:
/// neither process says that one was still running, and both exit cleanly.
#[tokio::test]
async fn every_task_ends_when_its_process_stops() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let with_log = || {
        let mut cmd = command_with_ollama(
            &db.path,
            &mock.url,
            &["--debounce-ms", "60000", "--max-wait-ms", "60000"],
        );
        cmd.env("STRIDE_VECTORS_LOG", "info")
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let mut owner = start_with(with_log()).await;
    let mut relay = start_with(with_log()).await;
    let stats = wait_for_stats(&relay, 30, |st| st["role"] == "relay").await;
    assert_eq!(stats["role"], json!("relay"), "{stats}");
    // Work in both: a document queued (the pipeline's worker waits on it) through the relay.
    relay
        .ok(
            "embed",
            json!({"index": "goals", "documents": [{"id": "a", "text": "queued"}]}),
        )
        .await;
    let mut logs = Vec::new();
    for server in [&mut relay, &mut owner] {
        let mut stderr = server.child.stderr.take().expect("piped stderr");
        logs.push(tokio::spawn(async move {
            let mut text = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text)
                .await
                .unwrap();
            text
        }));
    }
    relay.stop().await;
    owner.stop().await;
    for (who, log) in ["relay", "owner"].into_iter().zip(logs) {
        let log = log.await.unwrap();
        assert!(log.contains("serving MCP on stdio"), "{who}: no log read: {log}");
        assert!(
            !log.contains("still running"),
            "{who}: a task outlived the stop:\n{log}"
        );
    }
}

/// What keeps the relays' meeting point of a database from the owner: a directory where
/// the Unix socket goes, or (Windows) another program holding the pipe's name.
enum Occupier {
    Directory(std::path::PathBuf),
    Squatter(tokio::process::Child),
}

impl Occupier {
    async fn take(db: &std::path::Path) -> Occupier {
        if target_is_unix() {
            let mut socket = db.to_path_buf().into_os_string();
            socket.push(".sock");
            let socket = std::path::PathBuf::from(socket);
            std::fs::create_dir_all(socket.join("occupied")).unwrap();
            return Occupier::Directory(socket);
        }
        // The pipe's name, as an owner on this file logs it when it listens.
        let mut probe = bare_command(db);
        probe
            .env("STRIDE_VECTORS_LOG", "info")
            .stderr(std::process::Stdio::piped());
        let mut probe = start_with(probe).await;
        let stderr = probe.child.stderr.take().expect("piped stderr");
        let log = tokio::spawn(async move {
            let mut text = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::BufReader::new(stderr), &mut text)
                .await
                .unwrap();
            text
        });
        probe.stop().await;
        let log = log.await.unwrap();
        let line = log
            .lines()
            .find(|l| l.contains("listening for relays"))
            .unwrap_or_else(|| panic!("no 'listening for relays' in the log:\n{log}"));
        let name = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .expect("address= in the line")
            .to_string();
        let squatter = std::env::var("STRIDE_VECTORS_TEST_PIPE_SQUATTER")
            .expect("scripts/test-platforms builds squat-pipe.exe and names it here");
        let runner = std::env::var("STRIDE_VECTORS_TEST_RUNNER").unwrap_or_else(|_| "wine".into());
        let mut words = runner.split_whitespace();
        let mut child = tokio::process::Command::new(words.next().unwrap())
            .args(words)
            .arg(squatter)
            .arg(&name)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the squatter");
        let mut ready = String::new();
        let stdout = child.stdout.as_mut().unwrap();
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(stdout), &mut ready)
            .await
            .unwrap();
        assert_eq!(ready.trim(), "ready", "the squatter could not take {name}");
        Occupier::Squatter(child)
    }

    async fn free(self) {
        match self {
            Occupier::Directory(dir) => std::fs::remove_dir_all(dir).unwrap(),
            Occupier::Squatter(mut child) => {
                drop(child.stdin.take());
                child.wait().await.unwrap();
            }
        }
    }
}

/// An owner that cannot listen for relays (its socket's path taken by a directory, or its
/// pipe's name by another program) still serves its own client and says why in `stats`; a
/// second process's calls answer with the reason within seconds instead of waiting on
/// "still starting"; once the path is free the owner listens, and the second process relays
/// to it.
#[tokio::test]
async fn an_owner_that_cannot_listen_says_so_and_the_others_hear_why() {
    if on_postgres() {
        return; // Nothing to own on PostgreSQL.
    }
    let db = temp_db();
    let occupier = Occupier::take(&db.path).await;
    let owner = start(&db.path).await;
    let stats = wait_for_stats(&owner, 10, |st| st["relay_socket_error"].is_string()).await;
    let why = stats["relay_socket_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("cannot listen for relays"), "{stats}");
    owner
        .ok("create_index", json!({"index": "goals", "dimension": 2}))
        .await;

    let other = start(&db.path).await;
    let asked = Instant::now();
    let error = other.err("list_indexes", json!({})).await;
    assert!(error.contains("cannot be reached"), "{error}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        asked.elapsed()
    );
    let error = other.err("stats", json!({})).await;
    assert!(error.contains("its own stats say why"), "{error}");

    occupier.free().await;
    let stats = wait_for_stats(&owner, 30, |st| st["relay_socket_error"].is_null()).await;
    assert!(stats["relay_socket_error"].is_null(), "{stats}");
    // Until it reaches the owner, its calls keep saying why.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = other.call("stats", json!({})).await;
        if r.is_error != Some(true) {
            let stats = r.structured_content.unwrap();
            assert_eq!(stats["role"], json!("relay"), "{stats}");
            break;
        }
        assert!(text(&r).contains("cannot be reached"), "{}", text(&r));
        assert!(Instant::now() < deadline, "still not relaying: {}", text(&r));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = other.ok("list_indexes", json!({})).await;
    assert_eq!(list["indexes"][0]["index"], json!("goals"), "{list}");
    other.stop().await;
    owner.stop().await;
}

/// A database path of about 300 bytes, with spaces and non-ASCII letters: the socket cannot
/// sit beside it (`sun_path` holds 108 bytes), so it goes to the per-user runtime
/// directory, and an owner and a relay work on it as on any path.
#[tokio::test]
async fn a_long_path_with_spaces_and_accents_still_gets_an_owner_and_a_relay() {
    if on_postgres() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = tmp.path().join("Users").join("Zoë Müller");
    while dir.as_os_str().len() < 270 {
        dir = dir.join("Application Support — Stride");
    }
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("stride vectors.duckdb");
    assert!(db.as_os_str().len() >= 290, "{}", db.as_os_str().len());
    let owner = start(&db).await;
    owner
        .ok("create_index", json!({"index": "goals", "dimension": 2}))
        .await;
    let relay = start(&db).await;
    let stats = wait_for_stats(&relay, 30, |st| st["role"] == "relay").await;
    assert_eq!(stats["role"], json!("relay"), "{stats}");
    relay
        .ok(
            "upsert",
            json!({"index": "goals", "vectors": [{"id": "é", "vector": [1, 0]}]}),
        )
        .await;
    let hits = owner
        .ok("search", json!({"index": "goals", "vector": [1, 0]}))
        .await;
    assert_eq!(hit_ids(&hits), ["é"]);
    relay.stop().await;
    owner.stop().await;
    assert_eq!(rows_in_file(&db, "goals").len(), 1);
}

/// A database in a directory this user cannot write (as root, whom modes do not stop, the
/// server runs as `nobody` in root's directory): every call, `stats` too, answers at once
/// with why, naming the lock file; nothing waits forever, and the process stops cleanly.
#[cfg(unix)]
#[tokio::test]
async fn a_read_only_directory_is_a_clear_error_and_never_a_hang() {
    use std::os::unix::fs::PermissionsExt;
    if on_postgres() {
        return; // Nothing to lock on PostgreSQL.
    }
    let db = temp_db();
    let dir = db.dir.path().join("read-only");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("v.duckdb");
    let mut cmd = bare_command(&path);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::set_permissions(db.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // `nobody` cannot reach root's home: a copy of the binary (and of the DuckDB library
        // a prebuilt build finds beside it) where it can.
        let bin_dir = db.dir.path().join("bin");
        std::fs::create_dir(&bin_dir).unwrap();
        let bin = server_bin();
        for entry in std::fs::read_dir(bin.parent().unwrap()).unwrap() {
            let from = entry.unwrap().path();
            let name = from.file_name().unwrap().to_string_lossy().into_owned();
            if from == bin || name.starts_with("libduckdb.") {
                std::fs::copy(&from, bin_dir.join(&name)).unwrap();
            }
        }
        cmd = server_command_for(&bin_dir.join(bin.file_name().unwrap()));
        cmd.arg("--db")
            .arg(&path)
            .env("STRIDE_VECTORS_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        cmd.uid(65534).gid(65534);
    } else {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let s = start_with(cmd).await;
    let answered = tokio::time::timeout(
        Duration::from_secs(60),
        s.err("create_index", json!({"index": "goals", "dimension": 2})),
    )
    .await
    .expect("a call on an unwritable directory must answer, not hang");
    assert!(
        answered.contains("cannot take the owner lock") && answered.contains("v.duckdb.owner.lock"),
        "{answered}"
    );
    assert!(
        answered.to_lowercase().contains("permission denied"),
        "{answered}"
    );
    let stats = s.err("stats", json!({})).await;
    assert!(stats.contains("cannot take the owner lock"), "{stats}");
    s.stop().await;
    assert!(!path.exists(), "nothing was written");
}

/// A process that starts while the owner is frozen (its socket accepts, nothing answers the
/// MCP handshake) does not wait on it forever: within the owner timeout plus the grace for
/// a starting owner its calls answer that the owner cannot be reached; once the owner
/// resumes, it relays.
#[tokio::test]
async fn a_process_started_while_the_owner_is_frozen_answers_and_relays_once_it_resumes() {
    if on_postgres() {
        return; // Nothing to own on PostgreSQL.
    }
    let db = temp_db();
    let owner = start(&db.path).await;
    owner
        .ok("create_index", json!({"index": "goals", "dimension": 2}))
        .await;
    let child_pid = owner.child.id().unwrap();
    let signal = |sig| {
        // SAFETY: a signal to our own child process.
        assert_eq!(unsafe { libc::kill(child_pid as i32, sig) }, 0);
    };
    signal(libc::SIGSTOP);
    let mut cmd = command(&db.path);
    cmd.args(["--owner-timeout-ms", "1500"]);
    let late = start_with(cmd).await;
    let asked = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(60), late.call("list_indexes", json!({})))
        .await
        .expect("a call must answer while the owner is frozen, not wait for it");
    eprintln!("answered after {:?}: {}", asked.elapsed(), text(&answer));
    assert_eq!(answer.is_error, Some(true), "{}", text(&answer));
    assert!(text(&answer).contains("cannot be reached"), "{}", text(&answer));
    signal(libc::SIGCONT);
    let stats = stats_once_answered(&late, |st| st["role"] == "relay").await;
    assert_eq!(stats["role"], json!("relay"), "{stats}");
    let list = late.ok("list_indexes", json!({})).await;
    assert_eq!(list["indexes"][0]["index"], json!("goals"), "{list}");
    late.stop().await;
    owner.stop().await;
}
