//! A small MCP client of this very binary, for the `demo` and `bench` subcommands: it starts
//! `stride-vectors` as a child process on stdio, exactly as Mastra or Claude Desktop would,
//! and calls its tools. The server code is reached only through the MCP wire.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

/// A child server and the MCP session to it.
pub struct ChildServer {
    client: RunningService<RoleClient, ()>,
    child: tokio::process::Child,
}

impl ChildServer {
    /// Start this binary on `db` with `extra` flags; its logs go to our stderr.
    pub async fn start(db: &Path, extra: &[&str]) -> Result<ChildServer> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("--db")
            .arg(db)
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting the server")?;
        let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
            bail!("the server's stdio was not captured");
        };
        let client = ().serve((stdout, stdin)).await.context("MCP handshake")?;
        Ok(ChildServer { client, child })
    }

    /// Call a tool; a tool error becomes an `Err` with the server's message.
    pub async fn call(&self, tool: &str, args: Value) -> Result<Value> {
        let Value::Object(args) = args else {
            bail!("arguments must be an object")
        };
        let result = self
            .client
            .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
            .await
            .with_context(|| format!("calling {tool}"))?;
        if result.is_error == Some(true) {
            let text: String = result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect();
            bail!("{tool} failed: {text}");
        }
        result
            .structured_content
            .with_context(|| format!("{tool}: no structured content"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Close stdin and wait for a clean exit.
    pub async fn stop(mut self) -> Result<()> {
        drop(self.client);
        let status = self.child.wait().await?;
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
