//! `pyro demo ollama` against a scripted model: a tiny HTTP/1.1 server on 127.0.0.1 that
//! answers `POST /v1/chat/completions` the way Ollama's OpenAI-compatible API does, one
//! canned reply per round, and keeps every request body for the test to inspect. No real
//! model can be downloaded where these tests run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use pyro_test::Sandbox;
use serde_json::{json, Value};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scripted model: the n-th request gets `replies[n]` as its assistant message.
struct ScriptedModel {
    base_url: String,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl ScriptedModel {
    fn start(replies: Vec<Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        thread::spawn(move || {
            for (round, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let reply = replies.get(round).cloned().unwrap_or_else(|| json!({"role": "assistant", "content": "done"}));
                answer(stream, &reply, |body| seen.lock().unwrap().push(body));
            }
        });
        Self { base_url, requests }
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request (headers, then a `Content-Length` body) and answers with `message`
/// as `choices[0].message`, after handing the request's JSON body to `record` (before the
/// reply, so the demo cannot finish before the test sees what it sent).
fn answer(stream: TcpStream, message: &Value, record: impl FnOnce(Value)) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    assert!(request_line.starts_with("POST /v1/chat/completions "), "{request_line}");
    record(serde_json::from_slice(&body).ok()?);
    let reply = json!({"id": "chatcmpl-test", "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}).to_string();
    let mut stream = stream;
    write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len()).ok()
}

/// An assistant message calling `name` with `arguments` sent as a JSON string.
fn tool_call(id: &str, name: &str, arguments: Value) -> Value {
    json!({"role": "assistant", "content": "", "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]})
}

/// The tool messages the demo sent back, across every request.
fn tool_results(requests: &[Value]) -> Vec<String> {
    let last = requests.last().expect("at least one request");
    last["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "tool").map(|m| m["content"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn no_model_server_is_one_line_and_exit_1() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // closed once dropped
    let sb = Sandbox::new(crate::PYRO);
    let out = sb.raw(&["demo", "ollama", "--base-url", &format!("http://127.0.0.1:{port}/v1")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "[error] failed to call Ollama. Ensure `ollama serve` is running and the model is available.\n");
    assert!(text(&out.stdout).contains("[ollama] starting tool demo with model=llama3.2:3b"), "{}", text(&out.stdout));
}

#[test]
fn a_model_that_calls_no_tool_fails_the_check() {
    let model = ScriptedModel::start(vec![json!({"role": "assistant", "content": "git version 9.9 (trust me)"})]);
    let sb = Sandbox::new(crate::PYRO);
    let out = sb.raw(&["demo", "ollama", "--base-url", &model.base_url, "--model", "scripted"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("[ollama] no tool calls returned; stopping loop"), "{}", text(&out.stdout));
    assert_eq!(text(&out.stderr), "[error] demo did not execute a successful vm_run or vm_exec\n");
    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    let body = &requests[0];
    assert_eq!(body["model"], "scripted");
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["temperature"], 0);
    let names: Vec<&str> = body["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["vm_run", "vm_list_environments", "vm_create", "vm_start", "vm_exec", "vm_status"]);
    assert!(body["tools"][0]["function"]["parameters"]["properties"]["command"].is_object(), "{}", body["tools"][0]);
}

#[test]
fn tool_errors_go_back_to_the_model() {
    let model =
        ScriptedModel::start(vec![tool_call("call_1", "vm_status", json!({"vm_id": "000000000000"})), json!({"role": "assistant", "content": "no such VM"})]);
    let sb = Sandbox::new(crate::PYRO);
    let out = sb.raw(&["demo", "ollama", "--base-url", &model.base_url]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("[tool] vm_status failed: ") && stdout.contains(r#"args={"vm_id":"000000000000"}"#), "{stdout}");
    let results = tool_results(&model.requests());
    let error: Value = serde_json::from_str(&results[0]).unwrap();
    assert_eq!(error["ok"], false);
    assert_eq!(error["tool_name"], "vm_status");
    assert_eq!(error["error_type"], "not_found");
    assert_eq!(error["arguments"], json!({"vm_id": "000000000000"}));
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn demo_ollama_vm_run_proves_git_in_the_guest() {
    let model = ScriptedModel::start(vec![
        tool_call("call_1", "vm_run", json!({"environment": "debian:12", "command": "git --version", "timeout_seconds": "60"})),
        json!({"role": "assistant", "content": "git is installed."}),
    ]);
    let sb = Sandbox::new(crate::PYRO);
    let out = sb.raw(&["demo", "ollama", "--base-url", &model.base_url, "-v"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}\n{}", text(&out.stderr), sb.diagnostics());
    for line in [
        "[ollama] starting tool demo with model=llama3.2:3b",
        "[model] input user: Use the vm_run tool",
        "[model] tool_call vm_run",
        "[tool] calling vm_run",
        "[tool] vm_run succeeded",
        "[tool] result vm_run: {",
        "[ollama] no tool calls returned; stopping loop",
        "[done] command execution succeeded",
        "[summary] exit_code=0 fallback_used=False execution_mode=guest_vsock",
        "[summary] stdout=git version 2.",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let results = tool_results(&requests);
    assert_eq!(results.len(), 1);
    assert!(results[0].contains("git version"), "{}", results[0]);
    assert_eq!(std::fs::read_dir(sb.vms_dir()).map(|d| d.count()).unwrap_or(0), 0, "the VM is cleaned up");
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn demo_ollama_create_then_exec_with_a_placeholder_id() {
    let model = ScriptedModel::start(vec![
        tool_call("call_1", "vm_create", json!({"profile": "debian:12"})),
        tool_call("call_2", "vm_exec", json!({"vm_id": "<vm_id_returned_by_vm_create>", "command": "git --version", "timeout_seconds": "60"})),
        json!({"role": "assistant", "content": "done"}),
    ]);
    let sb = Sandbox::new(crate::PYRO);
    let out = sb.raw(&["demo", "ollama", "--base-url", &model.base_url]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}\n{}", text(&out.stderr), sb.diagnostics());
    for line in ["[tool] vm_create succeeded", "[tool] resolved vm_id placeholder", "[tool] vm_exec succeeded", "[summary] exit_code=0 "] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let results = tool_results(&model.requests());
    assert!(results[1].contains("git version"), "{}", results[1]);
    assert_eq!(std::fs::read_dir(sb.vms_dir()).map(|d| d.count()).unwrap_or(0), 0, "the VM is cleaned up");
}
