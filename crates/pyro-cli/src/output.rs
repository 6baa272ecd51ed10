//! Rendering conventions shared by every command: `--json` prints pretty JSON with sorted
//! keys on stdout; failures print `[error] <message>` on stderr, or
//! `{"ok": false, "error": <message>}` on stdout with `--json`.

use serde::Serialize;

/// Prints `value` as pretty JSON with sorted keys.
pub fn print_json<T: Serialize>(value: &T) {
    // Converting through `Value` (a BTreeMap without `preserve_order`) sorts the keys.
    let value = serde_json::to_value(value).expect("results always serialise");
    println!("{}", serde_json::to_string_pretty(&value).expect("JSON values always print"));
}

/// Reports a failure in the mode the command was asked for.
pub fn print_error(message: &str, json: bool) {
    if json {
        print_json(&serde_json::json!({ "ok": false, "error": message }));
    } else {
        eprintln!("[error] {message}");
    }
}

/// A progress sink: stderr lines in human mode, nothing with `--json`.
pub fn progress(json: bool) -> impl Fn(&str) + Send + Sync {
    move |line: &str| {
        if !json {
            eprintln!("{line}");
        }
    }
}

/// "yes"/"no" for human output.
pub fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}
