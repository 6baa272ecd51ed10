//! `pyro run ENV [...] -- CMD…`: one command in a fresh microVM.

use pyro_core::events::OutputChunk;
use pyro_core::guest::shell_quote;
use pyro_core::{Error, Pyro, Result};

use crate::cli::RunArgs;
use crate::output::{print_json, progress, raw_stderr, raw_stdout_or_drop, tell};
use crate::settings;

/// Runs `pyro run`; the exit code is the guest command's.
pub async fn run(pyro: &Pyro, args: RunArgs, json: bool) -> Result<i32> {
    let command = shell_join(&args.command)?;
    let options = settings::run_options(&args)?;
    let sink = progress(json);
    let stream = |chunk: OutputChunk<'_>| {
        // Live output in human mode; the JSON result carries it otherwise.
        // The command's own bytes pass through unescaped, as a terminal would show them; a
        // closed stdout drops the rest but the VM is still torn down.
        match chunk {
            OutputChunk::Stdout(bytes) => raw_stdout_or_drop(bytes),
            OutputChunk::Stderr(bytes) => raw_stderr(bytes),
        }
    };
    let output: pyro_core::events::OutputSink<'_> = if json { None } else { Some(&stream) };
    let report = pyro.run_in_vm(&options, &command, args.timeout_seconds, &sink, output).await?;
    if json {
        print_json(&report);
    } else {
        if report.output.stdout_truncated || report.output.stderr_truncated {
            tell!("[run] output truncated at {} bytes per stream", pyro_core::vm::DEFAULT_MAX_OUTPUT_BYTES);
        }
        tell!(
            "[run] environment={} execution_mode={} exit_code={} duration_ms={}",
            report.environment,
            report.execution_mode,
            report.output.exit_code,
            report.output.duration_ms
        );
    }
    Ok(report.output.exit_code)
}

/// Turns the words after `--` into one shell command line. A single word is taken as a
/// whole command line (`pyro run debian:12 -- 'echo a && echo b'`); several words are
/// quoted so each stays one argument.
pub fn shell_join(words: &[String]) -> Result<String> {
    match words {
        [] => Err(Error::InvalidArgument("command is required after `--`".into())),
        [single] if !single.trim().is_empty() => Ok(single.clone()),
        [_] => Err(Error::InvalidArgument("command is required after `--`".into())),
        many => Ok(many.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn joins_and_quotes() {
        assert_eq!(shell_join(&words(&["git", "--version"])).unwrap(), "git --version");
        assert_eq!(shell_join(&words(&["echo", "a b", "it's"])).unwrap(), r#"echo 'a b' 'it'"'"'s'"#);
        assert_eq!(shell_join(&words(&["echo hi && uname -r"])).unwrap(), "echo hi && uname -r");
        assert_eq!(shell_join(&words(&["printf", ""])).unwrap(), "printf ''");
    }

    #[test]
    fn empty_command_is_an_error() {
        assert_eq!(shell_join(&[]).unwrap_err().to_string(), "command is required after `--`");
        assert!(shell_join(&words(&["  "])).is_err());
    }
}
