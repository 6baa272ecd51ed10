//! `pyro demo ollama`: a tool-calling loop in which a local model (Ollama's
//! OpenAI-compatible API) is asked to run `git --version` in a `debian:12` guest through
//! pyro's tools. It succeeds only when a `vm_run` or `vm_exec` exited 0 and printed
//! `git version`.

use std::sync::Arc;

use pyro_core::{Error, Pyro, Result};
use serde_json::{json, Value};

use super::chat::Chat;
use super::tools::DemoTools;
use crate::output::say;

/// Most model replies one demo asks for.
const MAX_ROUNDS: usize = 12;

/// What the guest must print for the demo to count.
const EXPECTED: &str = "git version";

const SYSTEM_PROMPT: &str = "You are operating pyro, which runs commands in ephemeral Linux microVMs. \
Use the provided tools; do not invent results. Prefer vm_run for one-shot commands. \
Use vm_create, vm_start, vm_exec and vm_status only when you need a VM's lifecycle, and pass \
the exact vm_id a tool returned. When a command has run, answer briefly without calling more tools.";

const USER_PROMPT: &str = "Use the vm_run tool with environment \"debian:12\" and command \"git --version\" \
to prove that git is installed inside a fresh microVM. Then report the version it printed.";

/// A command run that succeeded as a tool call: the candidate for the final check.
struct Execution {
    tool: String,
    exit_code: i64,
    stdout: String,
    execution_mode: String,
}

impl Execution {
    /// Whether this run is the proof the demo wants.
    fn confirms(&self) -> bool {
        self.exit_code == 0 && self.stdout.contains(EXPECTED)
    }
}

/// Runs the loop against `base_url` with `model`; `verbose` adds contents to the log.
pub async fn run(pyro: Arc<Pyro>, base_url: &str, model: &str, verbose: bool) -> Result<i32> {
    let chat = Chat::new(base_url, model)?;
    let mut tools = DemoTools::new(pyro);
    say!("[ollama] starting tool demo with model={model}");
    let outcome = converse(&chat, &mut tools, verbose).await;
    tools.cleanup().await;
    let execution = outcome?;
    say!("[done] command execution succeeded");
    say!("[summary] exit_code={} fallback_used=False execution_mode={}", execution.exit_code, execution.execution_mode);
    if verbose {
        say!("[summary] stdout={}", execution.stdout.trim_end());
    }
    Ok(0)
}

/// The conversation itself, up to [`MAX_ROUNDS`] replies; returns the confirming run.
async fn converse(chat: &Chat, tools: &mut DemoTools, verbose: bool) -> Result<Execution> {
    let specs = tools.specs();
    let mut messages = vec![json!({"role": "system", "content": SYSTEM_PROMPT}), json!({"role": "user", "content": USER_PROMPT})];
    log_message("input", &messages[1], verbose);
    let mut best: Option<Execution> = None;
    for _ in 0..MAX_ROUNDS {
        let reply = chat.complete(&messages, &specs).await?;
        log_message("output", &reply, verbose);
        let calls = reply["tool_calls"].as_array().cloned().unwrap_or_default();
        messages.push(reply);
        if calls.is_empty() {
            say!("[ollama] no tool calls returned; stopping loop");
            return verdict(best);
        }
        for (index, call) in calls.iter().enumerate() {
            let name = call["function"]["name"].as_str().unwrap_or_default().to_owned();
            say!("[model] tool_call {name}");
            let (arguments, outcome) = match tools.arguments(&call["function"]["arguments"]) {
                Ok(arguments) => {
                    say!("[tool] calling {name}");
                    let outcome = tools.call(&name, arguments.clone()).await;
                    (Value::Object(arguments), outcome)
                }
                Err(e) => (call["function"]["arguments"].clone(), Err(e)),
            };
            let content = match outcome {
                Ok(result) => {
                    say!("[tool] {name} succeeded");
                    if matches!(name.as_str(), "vm_run" | "vm_exec") && !best.as_ref().is_some_and(Execution::confirms) {
                        best = Some(execution(&name, &result));
                    }
                    result
                }
                Err(error) => {
                    say!("[tool] {name} failed: {error} args={arguments}");
                    failure(&name, arguments, &error)
                }
            };
            if verbose {
                say!("[tool] result {name}: {content}");
            } else {
                say!("[tool] result {name}");
            }
            let id = call["id"].as_str().map_or_else(|| format!("call_{index}"), str::to_owned);
            let message = json!({"role": "tool", "tool_call_id": id, "name": name, "content": content.to_string()});
            log_message("input", &message, verbose);
            messages.push(message);
        }
    }
    Err(Error::LimitExceeded("tool-calling loop exceeded maximum rounds".into()))
}

/// `[model] input|output <role>`, with the content when `verbose`.
fn log_message(direction: &str, message: &Value, verbose: bool) {
    let role = message["role"].as_str().unwrap_or("assistant");
    match message["content"].as_str() {
        Some(content) if verbose && !content.is_empty() => say!("[model] {direction} {role}: {content}"),
        _ => say!("[model] {direction} {role}"),
    }
}

/// What a successful `vm_run` / `vm_exec` result says about its command.
fn execution(tool: &str, result: &Value) -> Execution {
    Execution {
        tool: tool.into(),
        exit_code: result["exit_code"].as_i64().unwrap_or(-1),
        stdout: result["stdout"].as_str().unwrap_or_default().into(),
        execution_mode: result["execution_mode"].as_str().unwrap_or("unknown").into(),
    }
}

/// The tool message for a failed call, so the model can correct itself.
fn failure(name: &str, arguments: Value, error: &Error) -> Value {
    let mut body = json!({"ok": false, "tool_name": name, "arguments": arguments, "error_type": error.kind(), "error": error.to_string()});
    if let Some(hint) = hint(error) {
        body["hint"] = hint.into();
    }
    body
}

/// Advice for the mistakes small models make most.
fn hint(error: &Error) -> Option<&'static str> {
    match error.kind() {
        "not_found" => Some("use vm_list_environments for environment names and the exact vm_id returned by vm_create"),
        "invalid_argument" => Some("check the tool's parameters; arguments must be a JSON object matching its schema"),
        "wrong_state" => Some("check the VM with vm_status; start a created VM with vm_start"),
        _ => None,
    }
}

/// The demo's result once the model stopped calling tools.
fn verdict(best: Option<Execution>) -> Result<Execution> {
    let Some(execution) = best else {
        return Err(Error::InvalidArgument("demo did not execute a successful vm_run or vm_exec".into()));
    };
    if execution.exit_code != 0 {
        return Err(Error::InvalidArgument(format!("{} failed; expected exit_code=0", execution.tool)));
    }
    if !execution.confirms() {
        return Err(Error::InvalidArgument(format!("{} output did not contain '{EXPECTED}'", execution.tool)));
    }
    Ok(execution)
}
