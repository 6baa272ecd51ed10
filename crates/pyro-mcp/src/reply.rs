//! Tool results as MCP sees them. Success: the whole result object in
//! `structuredContent` (clients such as Claude Code show the model only that) and the same
//! JSON as one text item. Failure: an `isError` result whose text is
//! `Error executing tool <tool>: <message>` — the CLI's one-line message — with
//! `{"error", "error_kind"}` as its structured content. Command, service-log and shell
//! output is capped inline, head and tail kept, so one noisy process cannot flood a
//! model's context.

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{json, Value};

/// Bytes of one output stream (`stdout`/`stderr`) a result carries inline.
pub const INLINE_OUTPUT_LIMIT: usize = 64 * 1024;

/// The fields of a result object that hold output a process printed.
const OUTPUT_STREAMS: [&str; 3] = ["stdout", "stderr", "output"];

/// A successful call's result.
pub(crate) fn success(mut value: Value) -> CallToolResult {
    cap_output(&mut value);
    let text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
    let mut result = CallToolResult::structured(value);
    result.content = vec![ContentBlock::text(text)];
    result
}

/// A failed call's result: `message` is the one-line message, `kind` the error kind.
pub(crate) fn failure(tool: &str, message: &str, kind: &str) -> CallToolResult {
    let mut result = CallToolResult::structured_error(json!({"error": message, "error_kind": kind}));
    result.content = vec![ContentBlock::text(format!("Error executing tool {tool}: {message}"))];
    result
}

/// The result for a tool name this profile does not expose.
pub(crate) fn unknown_tool(name: &str) -> CallToolResult {
    let mut result = CallToolResult::structured_error(json!({"error": format!("Unknown tool: {name}"), "error_kind": "not_found"}));
    result.content = vec![ContentBlock::text(format!("Unknown tool: {name}"))];
    result
}

/// Caps every output string in `value` — `stdout`/`stderr` of commands and service logs,
/// `output` of shell reads — at [`INLINE_OUTPUT_LIMIT`] bytes (half head, half tail, a
/// marker between) and gives each object holding output a `truncated` field: true when
/// any of its output is incomplete (capped here, cut by the guest's own cap, which
/// `<stream>_truncated` reports, or already marked `truncated` by the core, as service
/// logs and shell reads are).
pub(crate) fn cap_output(value: &mut Value) {
    match value {
        Value::Object(object) => {
            let mut holds_output = false;
            let mut truncated = object.get("truncated") == Some(&Value::Bool(true));
            for stream in OUTPUT_STREAMS {
                let Some(Value::String(text)) = object.get_mut(stream) else { continue };
                holds_output = true;
                if let Some(capped) = head_and_tail(text, INLINE_OUTPUT_LIMIT) {
                    *text = capped;
                    object.insert(format!("{stream}_truncated"), Value::Bool(true));
                }
                truncated |= object.get(&format!("{stream}_truncated")) == Some(&Value::Bool(true));
            }
            if holds_output {
                object.insert("truncated".into(), Value::Bool(truncated));
            }
            object.values_mut().for_each(cap_output);
        }
        Value::Array(items) => items.iter_mut().for_each(cap_output),
        _ => {}
    }
}

/// `text` cut to about `limit` bytes — its head and tail on character boundaries, with a
/// line saying how much was left out — or `None` if it fits.
fn head_and_tail(text: &str, limit: usize) -> Option<String> {
    if text.len() <= limit {
        return None;
    }
    let mut head_end = limit / 2;
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - limit / 2;
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let omitted = tail_start - head_end;
    Some(format!("{}\n[... {omitted} bytes omitted: output over {limit} bytes keeps its head and tail ...]\n{}", &text[..head_end], &text[tail_start..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_keeps_head_and_tail_and_says_so() {
        let long = format!("{}{}", "a".repeat(INLINE_OUTPUT_LIMIT), "é".repeat(INLINE_OUTPUT_LIMIT));
        let mut value = json!({"stdout": long, "stderr": "ok", "stdout_truncated": false, "stderr_truncated": false, "exit_code": 0});
        cap_output(&mut value);
        let stdout = value["stdout"].as_str().unwrap();
        assert!(stdout.len() < INLINE_OUTPUT_LIMIT + 200);
        assert!(stdout.starts_with("aaa") && stdout.ends_with("éé") && stdout.contains("bytes omitted"));
        assert_eq!((value["truncated"].clone(), value["stdout_truncated"].clone(), value["stderr"].clone()), (json!(true), json!(true), json!("ok")));
    }

    #[test]
    fn short_output_is_untouched_and_nested_entries_are_capped_too() {
        let mut value = json!({"entries": [{"stdout": "x", "stderr": "", "stdout_truncated": false, "stderr_truncated": true}], "count": 1});
        cap_output(&mut value);
        assert_eq!(value["entries"][0]["stdout"], "x");
        assert_eq!(value["entries"][0]["truncated"], true, "the guest's own cap counts");
        assert!(value.get("truncated").is_none());
    }

    #[test]
    fn service_logs_and_shell_output_are_capped_and_keep_the_cores_truncated() {
        let mut logs = json!({"service_name": "app", "stdout": "x".repeat(INLINE_OUTPUT_LIMIT * 2), "stderr": "", "truncated": false});
        cap_output(&mut logs);
        assert!(logs["stdout"].as_str().unwrap().len() < INLINE_OUTPUT_LIMIT + 200);
        assert_eq!((logs["truncated"].clone(), logs["stdout_truncated"].clone()), (json!(true), json!(true)));
        let mut tail = json!({"stdout": "a\n", "stderr": "", "truncated": true});
        cap_output(&mut tail);
        assert_eq!(tail["truncated"], true, "more lines than asked for stays truncated");
        let mut read = json!({"shell_id": "s", "output": "é".repeat(INLINE_OUTPUT_LIMIT), "next_cursor": 1, "truncated": false});
        cap_output(&mut read);
        assert!(read["output"].as_str().unwrap().contains("bytes omitted"));
        assert_eq!(read["truncated"], true);
    }

    #[test]
    fn failures_carry_the_cli_message_and_the_kind() {
        let result = failure("workspace_status", "workspace 'x' does not exist", "not_found");
        assert_eq!(result.is_error, Some(true));
        assert_eq!(result.content[0].as_text().unwrap().text, "Error executing tool workspace_status: workspace 'x' does not exist");
        assert_eq!(result.structured_content.unwrap(), json!({"error": "workspace 'x' does not exist", "error_kind": "not_found"}));
    }
}
