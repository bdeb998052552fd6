//! The one MCP client of this binary, for the `demo`, `stride-vectors-bench` and the
//! integration tests (`tests/common`): it starts `stride-vectors` as a child process on
//! stdio, exactly as Mastra or Claude Desktop would, and calls its tools. The server code
//! is reached only through the MCP wire. [`LineClient`] is the bench's bare-lines variant.
//!
//! It owns process start, handshake, calls and exit; it asserts nothing (the tests wrap it
//! with their assertions) and is never used by the server itself.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A child server and the MCP session to it.
pub struct ChildServer {
    pub client: RunningService<RoleClient, ()>,
    pub child: tokio::process::Child,
}

impl ChildServer {
    /// Start this binary on `db` with `extra` flags; its logs go to our stderr.
    pub async fn start(db: &Path, extra: &[&str]) -> Result<ChildServer> {
        ChildServer::spawn(command(db, extra)?).await
    }

    /// Start `cmd` with its stdin and stdout piped to us (its stderr as `cmd` says), killed
    /// if dropped, and do the MCP handshake.
    pub async fn spawn(cmd: tokio::process::Command) -> Result<ChildServer> {
        let (child, stdin, stdout) = spawn_piped(cmd)?;
        let client = ().serve((stdout, stdin)).await.context("MCP handshake")?;
        Ok(ChildServer { client, child })
    }

    /// Call a tool; `Err` only for a protocol error (a tool error is a result).
    pub async fn call_tool(&self, tool: &str, args: Value) -> Result<CallToolResult> {
        let Value::Object(args) = args else {
            bail!("{tool}: arguments must be an object")
        };
        self.client
            .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
            .await
            .with_context(|| format!("calling {tool}"))
    }

    /// Call a tool that should succeed: its structured content, or `Err` with the
    /// server's message.
    pub async fn tool(&self, tool: &str, args: Value) -> Result<Value> {
        let result = self.call_tool(tool, args).await?;
        if result.is_error == Some(true) {
            bail!("{tool} failed: {}", text_of(&result));
        }
        result
            .structured_content
            .with_context(|| format!("{tool}: no structured content"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Close stdin (the client goes away) and wait up to `within` for the exit.
    pub async fn exit(self, within: Duration) -> Result<std::process::ExitStatus> {
        let ChildServer { client, mut child } = self;
        drop(client);
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => bail!("the server did not exit within {within:?} of its stdin closing"),
        }
    }

    /// Close stdin and wait for a clean exit.
    pub async fn close(self) -> Result<()> {
        let status = self.exit(Duration::from_secs(60)).await?;
        if !status.success() {
            bail!("the server exited with {status}");
        }
        Ok(())
    }

    /// SIGKILL, no flushing.
    pub async fn kill(mut self) -> Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// A result's text content, joined by newlines.
pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The command that starts this server binary on `db` with `extra` flags.
pub fn command(db: &Path, extra: &[&str]) -> Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(server_binary()?);
    cmd.arg("--db").arg(db).args(extra);
    Ok(cmd)
}

/// The server binary: `$STRIDE_VECTORS_SERVER` when set (another build, to compare), else
/// this one, or `stride-vectors` beside it when this is another tool (`stride-vectors-bench`).
fn server_binary() -> Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("STRIDE_VECTORS_SERVER") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let name = format!("stride-vectors{}", std::env::consts::EXE_SUFFIX);
    if exe.file_name().is_some_and(|n| n == name.as_str()) {
        return Ok(exe);
    }
    let beside = exe.with_file_name(&name);
    anyhow::ensure!(
        beside.exists(),
        "the server binary {} is missing: build it with cargo build --release",
        beside.display()
    );
    Ok(beside)
}

/// Start `cmd` with its stdin and stdout piped to us (its stderr as `cmd` says); it is
/// killed if dropped.
fn spawn_piped(
    mut cmd: tokio::process::Command,
) -> Result<(
    tokio::process::Child,
    tokio::process::ChildStdin,
    tokio::process::ChildStdout,
)> {
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the server")?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("the server's stdio was not captured");
    };
    Ok((child, stdin, stdout))
}

/// This binary on stdio, spoken to in request lines the caller built beforehand: a client
/// that costs nothing while a benchmark's clock runs, so the time measured is the server's.
/// One request at a time: the answer is the next message with an id.
pub struct LineClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: BufReader<tokio::process::ChildStdout>,
    line: String,
}

impl LineClient {
    /// Start this binary on `db` and do the MCP handshake.
    pub async fn start(db: &Path, extra: &[&str]) -> Result<LineClient> {
        let (child, stdin, stdout) = spawn_piped(command(db, extra)?)?;
        let mut client = LineClient {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            line: String::new(),
        };
        let hello = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "stride-vectors-bench", "version": env!("CARGO_PKG_VERSION")}}});
        client.request(format!("{hello}\n").as_bytes()).await?;
        client
            .stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
            .await?;
        Ok(client)
    }

    /// Send one request line (ending in a newline) and return the answer's `result`; a
    /// JSON-RPC error or a tool error is an `Err`.
    pub async fn request(&mut self, line: &[u8]) -> Result<Value> {
        self.stdin.write_all(line).await?;
        self.stdin.flush().await?;
        let mut answer = loop {
            self.line.clear();
            if self.stdout.read_line(&mut self.line).await? == 0 {
                bail!("the server closed its stdout");
            }
            let message: Value = serde_json::from_str(&self.line).context("the server's answer")?;
            if message.get("id").is_some() {
                break message; // Anything else is a notification.
            }
        };
        if let Some(error) = answer.get("error") {
            bail!("JSON-RPC error: {error}");
        }
        let result = answer["result"].take();
        if result["isError"] == true {
            bail!("tool error: {}", result["content"]);
        }
        Ok(result)
    }

    /// The line of a `tools/call` request.
    pub fn call_line(id: u64, tool: &str, args: &Value) -> Vec<u8> {
        let mut line = serde_json::to_vec(&serde_json::json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": args}}))
        .expect("a JSON value serialises");
        line.push(b'\n');
        line
    }

    /// Close stdin and wait for a clean exit.
    pub async fn close(mut self) -> Result<()> {
        drop(self.stdin);
        let status = self.child.wait().await?;
        if !status.success() {
            bail!("the server exited with {status}");
        }
        Ok(())
    }
}
