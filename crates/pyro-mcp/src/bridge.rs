//! The Python SDK's channel: newline-delimited JSON on stdin/stdout of one long-lived
//! `pyro __sdk` child, so an SDK call costs a line each way instead of a process start.
//!
//! The child first writes a hello line, `{"bridge": "pyro", "version": V, "protocol": 1}`.
//! Then each request is one line, `{"id": N, "method": TOOL, "params": {…}, "stream": B}`,
//! where `TOOL` is any [`ToolBox`] tool. Requests run concurrently; each ends with one
//! line, `{"id": N, "ok": true, "result": {…}}` or
//! `{"id": N, "ok": false, "error": MESSAGE, "error_kind": KIND}`. With `"stream": true`,
//! commands' output comes first as `{"id": N, "output": "stdout"|"stderr", "data": TEXT}`
//! lines while they run. A line that is not a request gets an error with `"id": null`.
//! End of stdin (the parent closed it or died) drops the calls still running and ends
//! the child; VMs of a dropped `vm_run` are deleted by their supervisor, whose owner is
//! this process.

use std::sync::Arc;

use pyro_core::events::OutputChunk;
use pyro_core::Pyro;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::tools::{Call, OutputHook};
use crate::ToolBox;

/// The version of the line protocol above.
pub const BRIDGE_PROTOCOL: u32 = 1;

/// The longest request line accepted (patches and file writes travel inline).
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024 * 1024;

/// One request line.
#[derive(Deserialize)]
struct Request {
    id: u64,
    method: String,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    stream: bool,
}

/// Serves the bridge on stdin/stdout until stdin ends.
pub async fn serve_stdio(pyro: Pyro) -> std::io::Result<()> {
    serve(pyro, tokio::io::stdin(), tokio::io::stdout()).await
}

/// Serves the bridge on `input`/`output` until `input` ends.
pub async fn serve(pyro: Pyro, input: impl AsyncRead + Unpin, output: impl AsyncWrite + Unpin + Send + 'static) -> std::io::Result<()> {
    let tools = Arc::new(ToolBox::new(Arc::new(pyro)));
    let (lines, queue) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(write_lines(output, queue));
    let _ = lines.send(json!({"bridge": "pyro", "version": env!("CARGO_PKG_VERSION"), "protocol": BRIDGE_PROTOCOL}).to_string());
    let mut input = BufReader::new(input);
    let mut calls = JoinSet::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut input).take(MAX_REQUEST_BYTES).read_until(b'\n', &mut line).await?;
        if read == 0 {
            break;
        }
        if !line.ends_with(b"\n") && read as u64 == MAX_REQUEST_BYTES {
            skip_rest_of_line(&mut input).await?;
            let _ = lines.send(unaddressed(&format!("a request line is longer than {MAX_REQUEST_BYTES} bytes")));
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Request>(&line) {
            Ok(request) => {
                calls.spawn(answer(tools.clone(), request, lines.clone()));
            }
            Err(error) => {
                let _ = lines.send(unaddressed(&format!("not a bridge request: {error}")));
            }
        }
        // Reap finished calls so the set does not grow with the session.
        while calls.try_join_next().is_some() {}
    }
    calls.abort_all();
    drop(lines);
    writer.await.map_err(std::io::Error::other)?
}

/// Runs one request and queues its lines.
async fn answer(tools: Arc<ToolBox>, request: Request, lines: mpsc::UnboundedSender<String>) {
    let id = request.id;
    let output: Option<OutputHook> = request.stream.then(|| {
        let lines = lines.clone();
        Arc::new(move |chunk: OutputChunk<'_>| {
            let (stream, bytes) = match chunk {
                OutputChunk::Stdout(bytes) => ("stdout", bytes),
                OutputChunk::Stderr(bytes) => ("stderr", bytes),
            };
            let _ = lines.send(json!({"id": id, "output": stream, "data": String::from_utf8_lossy(bytes)}).to_string());
        }) as OutputHook
    });
    let reply = match tools.call(&request.method, request.params, Call::new(None, output)).await {
        Ok(result) => json!({"id": id, "ok": true, "result": result}),
        Err(error) => json!({"id": id, "ok": false, "error": error.to_string(), "error_kind": error.kind()}),
    };
    let _ = lines.send(reply.to_string());
}

/// An error line for input that names no request.
fn unaddressed(message: &str) -> String {
    json!({"id": null, "ok": false, "error": message, "error_kind": "invalid_argument"}).to_string()
}

/// Discards input up to and including the next newline.
async fn skip_rest_of_line(input: &mut (impl AsyncBufReadExt + Unpin)) -> std::io::Result<()> {
    loop {
        let buffer = input.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(());
        }
        if let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            input.consume(end + 1);
            return Ok(());
        }
        let all = buffer.len();
        input.consume(all);
    }
}

/// Writes queued lines in order, each flushed, until every sender is gone.
async fn write_lines(mut output: impl AsyncWrite + Unpin, mut queue: mpsc::UnboundedReceiver<String>) -> std::io::Result<()> {
    while let Some(mut line) = queue.recv().await {
        line.push('\n');
        output.write_all(line.as_bytes()).await?;
        output.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyro_core::paths::Dirs;

    /// Feeds `input` to the bridge, reads `count` output lines (parsed), then closes its
    /// input (closing it earlier would cancel the calls) and waits for it to end.
    async fn exchange(input: &str, count: usize) -> Vec<Value> {
        let root = std::env::temp_dir().join(format!("pyro-bridge-test-{}-{}", std::process::id(), input.len()));
        let pyro = Pyro::with_dirs(Dirs { cache: root.join("cache"), state: root.join("state") });
        let (mut requests, server_in) = tokio::io::duplex(1 << 20);
        let (server_out, replies) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(serve(pyro, server_in, server_out));
        requests.write_all(input.as_bytes()).await.unwrap();
        let mut replies = BufReader::new(replies).lines();
        let mut lines = Vec::new();
        while lines.len() < count {
            let line = replies.next_line().await.unwrap().expect("the bridge ended early");
            lines.push(serde_json::from_str(&line).unwrap());
        }
        drop(requests);
        server.await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(root);
        lines
    }

    #[tokio::test]
    async fn says_hello_then_answers_each_request_by_id() {
        let lines = exchange(
            "{\"id\": 7, \"method\": \"workspace_list\"}\n\n{\"id\": 8, \"method\": \"workspace_status\", \"params\": {\"workspace_id\": \"000000000000\"}}\n",
            3,
        )
        .await;
        assert_eq!(lines[0]["bridge"], "pyro");
        assert_eq!(lines[0]["protocol"], BRIDGE_PROTOCOL);
        let by_id = |id: u64| lines.iter().find(|l| l["id"] == id).unwrap().clone();
        assert_eq!(by_id(7)["ok"], true);
        assert_eq!(by_id(7)["result"]["count"], 0);
        assert_eq!(by_id(8)["ok"], false);
        assert_eq!(by_id(8)["error_kind"], "not_found");
        assert_eq!(by_id(8)["error"], "workspace '000000000000' does not exist");
    }

    #[tokio::test]
    async fn bad_lines_get_unaddressed_errors_and_the_bridge_goes_on() {
        let lines = exchange("not json\n{\"id\": 1}\n{\"id\": 2, \"method\": \"no_such_tool\"}\n{\"id\": 3, \"method\": \"workspace_exec\", \"params\": {\"workspace_id\": 5}}\n", 5).await;
        assert_eq!(lines.len(), 5);
        assert_eq!(lines.iter().filter(|l| l["id"].is_null() && l["ok"] == false).count(), 2);
        let by_id = |id: u64| lines.iter().find(|l| l["id"] == id).unwrap().clone();
        assert_eq!(by_id(2)["error"], "unknown tool 'no_such_tool'");
        assert_eq!(by_id(3)["error_kind"], "invalid_argument");
    }
}
