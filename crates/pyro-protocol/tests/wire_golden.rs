//! Golden wire test: freezes the bytes of every message the host and the agent exchange.
//!
//! One example of every [`Request`], [`Response`], [`Hello`] form and frame kind is
//! serialised exactly as it goes on the wire and compared with the committed file under
//! `tests/golden/`; each golden is also decoded back and must equal its example. A
//! golden that changes means the wire changed: old agents (each workspace disk keeps
//! the agent it was created with) would no longer understand this host, or the other way
//! round. Read `VERSIONING.md` before changing one.
//!
//! `PYRO_UPDATE_GOLDEN=1 cargo test -p pyro-protocol --test wire_golden` rewrites the
//! goldens (then review the diff). Adding a variant fails to compile [`request_examples`]
//! or [`response_examples`] (their exhaustive matches) until it has an example, and the
//! test fails until its golden is committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pyro_protocol::{
    decode_request, decode_response, read_frame, write_frame, Capability, DataChannel, DirEntry, EntryKind, ExecRequest, ExecResult, Frame, FrameKind,
    GuestIdentity, GuestNetwork, Hello, HostHello, ListResult, ReadResult, ReadinessProbe, Request, Response, SecretValue, ServiceInfo, ServiceListResult,
    ServiceLogsResult, ServiceStartRequest, ServiceState, ShellInfo, ShellOpenRequest, ShellReadRequest, ShellReadResult, ShellSignal, ShellSignalRequest,
    ShellState, ShellWriteRequest, TarExportResult, TarImportResult, WriteResult, PROTOCOL_VERSION,
};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn updating() -> bool {
    std::env::var("PYRO_UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

/// Compares `actual` with the golden `name` (or rewrites it when updating); returns the
/// golden's bytes.
fn check(name: &str, actual: &[u8]) -> Vec<u8> {
    let path = golden_dir().join(name);
    if updating() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return actual.to_vec();
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("missing golden {} ({e}); a new message needs one: PYRO_UPDATE_GOLDEN=1 cargo test -p pyro-protocol --test wire_golden", path.display())
    });
    assert_eq!(
        String::from_utf8_lossy(&golden),
        String::from_utf8_lossy(actual),
        "wire bytes of {name} changed; see crates/pyro-protocol/VERSIONING.md (PYRO_UPDATE_GOLDEN=1 rewrites goldens)"
    );
    golden
}

/// One line of compact JSON, exactly as in a frame payload, plus a newline.
fn wire_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap();
    bytes.push(b'\n');
    bytes
}

fn entry(path: &str, kind: EntryKind, size_bytes: u64, mode: u32, link_target: Option<&str>) -> DirEntry {
    DirEntry { path: path.into(), kind, size_bytes, mode, link_target: link_target.map(Into::into) }
}

/// One example per [`Request`] variant, keyed by its `op`.
fn request_examples() -> Vec<Request> {
    let examples = vec![
        Request::Ping,
        Request::Exec(ExecRequest {
            command: "echo hi >&2; ls".into(),
            env: BTreeMap::from([("LANG".into(), "C.UTF-8".into())]),
            cwd: Some("/workspace".into()),
            timeout_ms: 30_000,
            max_output_bytes: 65_536,
            secret_env: BTreeMap::new(),
        }),
        Request::ReadFile { path: "/workspace/a.txt".into(), max_bytes: 1024 },
        Request::WriteFile { path: "/workspace/b.txt".into(), mode: Some(0o644), create_parents: true },
        Request::List { path: "/workspace".into(), recursive: true },
        Request::TarImport { destination: "/workspace".into() },
        Request::TarExport { path: "/workspace/src".into() },
        Request::Shutdown,
        Request::InstallSecrets { secrets: vec![SecretValue { name: "API_TOKEN".into(), value: "example-value".into() }] },
        Request::ShellOpen(ShellOpenRequest {
            shell_id: "5f1c2a9e0b7d".into(),
            cwd: "/workspace".into(),
            cols: 120,
            rows: 30,
            secret_env: BTreeMap::from([("API_TOKEN".into(), "TOKEN".into())]),
        }),
        Request::ShellRead(ShellReadRequest { shell_id: "5f1c2a9e0b7d".into(), cursor: 42, max_chars: 65_536, wait_for_idle_ms: Some(300) }),
        Request::ShellWrite(ShellWriteRequest { shell_id: "5f1c2a9e0b7d".into(), input: "cat CHECKLIST.md\n".into() }),
        Request::ShellSignal(ShellSignalRequest { shell_id: "5f1c2a9e0b7d".into(), signal: ShellSignal::Int }),
        Request::ShellClose { shell_id: "5f1c2a9e0b7d".into() },
        Request::ServiceStart(ServiceStartRequest {
            name: "app".into(),
            command: "sh serve.sh".into(),
            cwd: "/workspace".into(),
            env: BTreeMap::new(),
            secret_env: BTreeMap::from([("API_TOKEN".into(), "TOKEN".into())]),
            readiness: Some(ReadinessProbe::File { path: "/workspace/.app-ready".into() }),
            ready_timeout_ms: 30_000,
            ready_interval_ms: 500,
        }),
        Request::ServiceList,
        Request::ServiceLogs { name: "app".into(), tail_lines: Some(200) },
        Request::ServiceStop { name: "app".into(), grace_ms: 5_000 },
        Request::PortConnect { port: 8000 },
    ];
    for example in &examples {
        // Exhaustive on purpose: a new variant must get an example above.
        match example {
            Request::Ping
            | Request::Exec(_)
            | Request::ReadFile { .. }
            | Request::WriteFile { .. }
            | Request::List { .. }
            | Request::TarImport { .. }
            | Request::TarExport { .. }
            | Request::Shutdown
            | Request::InstallSecrets { .. }
            | Request::ShellOpen(_)
            | Request::ShellRead(_)
            | Request::ShellWrite(_)
            | Request::ShellSignal(_)
            | Request::ShellClose { .. }
            | Request::ServiceStart(_)
            | Request::ServiceList
            | Request::ServiceLogs { .. }
            | Request::ServiceStop { .. }
            | Request::PortConnect { .. } => {}
        }
    }
    examples
}

fn service_example() -> ServiceInfo {
    ServiceInfo {
        name: "app".into(),
        state: ServiceState::Running,
        pid: Some(212),
        started_at_ms: 1_700_000_000_000,
        ready_at_ms: Some(1_700_000_000_500),
        ended_at_ms: None,
        exit_code: None,
        stop_reason: None,
        stdout_bytes: 16,
        stderr_bytes: 0,
    }
}

/// One example per [`Response`] variant.
fn response_examples() -> Vec<Response> {
    let examples = vec![
        Response::Ok,
        Response::Error { message: "/workspace/nope does not exist".into() },
        Response::Exec(ExecResult {
            exit_code: 124,
            duration_ms: 30_002,
            timed_out: true,
            stdout_bytes: 70_000,
            stderr_bytes: 12,
            stdout_truncated: true,
            stderr_truncated: false,
        }),
        Response::Read(ReadResult { size_bytes: 4096, truncated: true }),
        Response::Write(WriteResult { bytes_written: 5, mode: 0o644 }),
        Response::List(ListResult {
            root: entry("/workspace", EntryKind::Directory, 0, 0o755, None),
            entries: vec![
                entry("/workspace/a.txt", EntryKind::File, 3, 0o644, None),
                entry("/workspace/fifo", EntryKind::Other, 0, 0o600, None),
                entry("/workspace/link", EntryKind::Symlink, 5, 0o777, Some("a.txt")),
            ],
        }),
        Response::TarImport(TarImportResult { entry_count: 3, bytes_written: 42 }),
        Response::TarExport(TarExportResult { kind: EntryKind::Directory, entry_count: 2, bytes_written: 7 }),
        Response::Unsupported { op: "format_disk".into(), message: "unknown request \"format_disk\"".into() },
        Response::Shell(ShellInfo {
            shell_id: "5f1c2a9e0b7d".into(),
            cwd: "/workspace".into(),
            cols: 120,
            rows: 30,
            state: ShellState::Exited,
            exit_code: Some(130),
            ended_ms_ago: Some(1_500),
            end_cursor: 812,
        }),
        Response::ShellRead(Box::new(ShellReadResult {
            shell: ShellInfo {
                shell_id: "5f1c2a9e0b7d".into(),
                cwd: "/workspace".into(),
                cols: 120,
                rows: 30,
                state: ShellState::Running,
                exit_code: None,
                ended_ms_ago: None,
                end_cursor: 20,
            },
            cursor: 8,
            next_cursor: 20,
            output: "\u{1b}[?2004hpyro$ ".into(),
        })),
        Response::Service(Box::new(service_example())),
        Response::ServiceList(ServiceListResult {
            services: vec![ServiceInfo {
                name: "worker".into(),
                state: ServiceState::Failed,
                stop_reason: Some("process_exited_before_ready".into()),
                exit_code: Some(127),
                ended_at_ms: Some(1_700_000_000_900),
                ready_at_ms: None,
                ..service_example()
            }],
        }),
        Response::ServiceLogs(Box::new(ServiceLogsResult { service: service_example(), stdout_truncated: true, stderr_truncated: false })),
    ];
    for example in &examples {
        // Exhaustive on purpose: a new variant must get an example above.
        match example {
            Response::Ok
            | Response::Error { .. }
            | Response::Exec(_)
            | Response::Read(_)
            | Response::Write(_)
            | Response::List(_)
            | Response::TarImport(_)
            | Response::TarExport(_)
            | Response::Unsupported { .. }
            | Response::Shell(_)
            | Response::ShellRead(_)
            | Response::Service(_)
            | Response::ServiceList(_)
            | Response::ServiceLogs(_) => {}
        }
    }
    examples
}

/// Hello forms: today's, and the protocol 1 form (no `capabilities`) old disks still send.
fn hello_examples() -> Vec<(&'static str, Hello)> {
    let base = Hello { protocol_version: 1, agent_version: "3.10.0".into(), kernel_release: "6.1.0".into(), uptime_ms: Some(812), capabilities: None };
    vec![
        ("protocol_1", base.clone()),
        (
            "current",
            Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "3.11.0".into(),
                capabilities: Some(Capability::ALL.iter().map(|c| c.name().to_string()).collect()),
                ..base
            },
        ),
    ]
}

#[test]
fn every_request_matches_its_golden() {
    let examples = request_examples();
    let ops: Vec<&str> = examples.iter().map(Request::op).collect();
    assert_eq!(ops, Request::OPS, "Request::OPS must list one op per variant, in declaration order");
    for example in examples {
        let golden = check(&format!("request/{}.json", example.op()), &wire_json(&example));
        assert_eq!(decode_request(golden.trim_ascii_end()).unwrap(), example);
        let value: serde_json::Value = serde_json::from_slice(&golden).unwrap();
        assert_eq!(value["op"], example.op());
    }
}

#[test]
fn every_response_matches_its_golden() {
    let examples = response_examples();
    let tags: Vec<&str> = examples.iter().map(Response::tag).collect();
    assert_eq!(tags, Response::TAGS, "Response::TAGS must list one tag per variant, in declaration order");
    for example in examples {
        let golden = check(&format!("response/{}.json", example.tag()), &wire_json(&example));
        assert_eq!(decode_response(golden.trim_ascii_end()).unwrap(), example);
        let value: serde_json::Value = serde_json::from_slice(&golden).unwrap();
        assert_eq!(value["result"], example.tag());
    }
}

#[test]
fn every_hello_matches_its_golden() {
    for (name, example) in hello_examples() {
        let golden = check(&format!("hello/{name}.json"), &wire_json(&example));
        assert_eq!(serde_json::from_slice::<Hello>(&golden).unwrap(), example);
    }
}

/// The host's Hello forms: a bare knock (what hosts before protocol 5 send) and one
/// carrying an identity.
#[test]
fn every_host_hello_matches_its_golden() {
    let identity = GuestIdentity {
        entropy_hex: "ab".repeat(GuestIdentity::ENTROPY_BYTES),
        unix_time_ns: 1_796_000_000_123_456_789,
        machine_id: "0123456789abcdef0123456789abcdef".into(),
    };
    let network = GuestNetwork {
        mac: "52:54:00:ab:cd:ef".into(),
        address: "10.0.2.15".parse().unwrap(),
        prefix_len: 24,
        gateway: "10.0.2.2".parse().unwrap(),
        dns: vec!["10.0.2.2".parse().unwrap()],
    };
    assert_eq!(network.mac_bytes(), Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
    for (name, example) in [
        ("bare", HostHello::default()),
        ("identity", HostHello { identity: Some(identity.clone()), network: None }),
        ("network", HostHello { identity: Some(identity), network: Some(network) }),
    ] {
        let golden = check(&format!("host_hello/{name}.json"), &wire_json(&example));
        assert_eq!(serde_json::from_slice::<HostHello>(&golden).unwrap(), example);
    }
    // What hosts before protocol 5 knock with still parses.
    assert_eq!(serde_json::from_slice::<HostHello>(b"{}").unwrap(), HostHello::default());
}

#[test]
fn capability_names_match_their_golden() {
    let mut names: Vec<u8> = Capability::ALL.iter().flat_map(|c| format!("{}\n", c.name()).into_bytes()).collect();
    names.shrink_to_fit();
    let golden = check("capabilities.txt", &names);
    let parsed: Vec<Capability> = String::from_utf8(golden).unwrap().lines().map(|l| Capability::from_name(l).unwrap()).collect();
    assert_eq!(parsed, Capability::ALL);
}

/// Frames in hex, one per line: every kind, and a data frame per channel.
#[test]
fn frames_match_their_golden() {
    let hello = serde_json::to_vec(&hello_examples()[1].1).unwrap();
    let request = serde_json::to_vec(&Request::ReadFile { path: "/a".into(), max_bytes: 4 }).unwrap();
    let response = serde_json::to_vec(&Response::Ok).unwrap();
    let mut frames = vec![
        Frame::empty(0, FrameKind::Hello),
        Frame { stream: 0, kind: FrameKind::Hello, payload: hello },
        Frame { stream: 7, kind: FrameKind::Request, payload: request },
    ];
    for channel in [DataChannel::Upload, DataChannel::Stdout, DataChannel::Stderr, DataChannel::Download] {
        frames.push(Frame::data(7, channel, b"hi"));
    }
    frames.extend([
        Frame::empty(7, FrameKind::DataEnd),
        Frame { stream: 7, kind: FrameKind::Response, payload: response },
        Frame::empty(0x0102_0304, FrameKind::Cancel),
    ]);
    for frame in &frames {
        // Exhaustive on purpose: a new frame kind must get an example above.
        match frame.kind {
            FrameKind::Hello | FrameKind::Request | FrameKind::Data | FrameKind::DataEnd | FrameKind::Response | FrameKind::Cancel => {}
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut text = String::new();
    for frame in &frames {
        let mut bytes = Vec::new();
        rt.block_on(write_frame(&mut bytes, frame)).unwrap();
        text.extend(bytes.iter().map(|b| format!("{b:02x}")));
        text.push('\n');
    }
    let golden = String::from_utf8(check("frames.hex", text.as_bytes())).unwrap();
    let mut decoded = Vec::new();
    for line in golden.lines() {
        let bytes: Vec<u8> = (0..line.len()).step_by(2).map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap()).collect();
        decoded.push(rt.block_on(read_frame(&mut bytes.as_slice())).unwrap().unwrap());
    }
    assert_eq!(decoded, frames);
}

/// No golden is left over from a removed or renamed message (a removal is a wire change).
#[test]
fn no_stale_goldens() {
    if updating() {
        return;
    }
    let mut expected: Vec<String> = request_examples().iter().map(|r| format!("request/{}.json", r.op())).collect();
    expected.extend(response_examples().iter().map(|r| format!("response/{}.json", r.tag())));
    expected.extend(hello_examples().iter().map(|(n, _)| format!("hello/{n}.json")));
    expected.extend(["capabilities.txt".to_string(), "frames.hex".to_string()]);
    expected.sort();
    let mut found = Vec::new();
    for sub in ["", "request", "response", "hello"] {
        for entry in std::fs::read_dir(golden_dir().join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                let name = entry.file_name().into_string().unwrap();
                found.push(if sub.is_empty() { name } else { format!("{sub}/{name}") });
            }
        }
    }
    found.sort();
    assert_eq!(found, expected, "goldens on disk and examples differ");
}

/// Every protocol 1 message still decodes: the request and response goldens of protocol
/// 1 are a subset of today's (no field was added to them), and a protocol 1 Hello
/// implies the protocol 1 capabilities.
#[test]
fn protocol_1_messages_still_decode() {
    if updating() {
        return; // the goldens are being rewritten by the other tests
    }
    for op in ["ping", "exec", "read_file", "write_file", "list", "tar_import", "tar_export", "shutdown"] {
        let bytes = std::fs::read(golden_dir().join(format!("request/{op}.json"))).unwrap();
        decode_request(bytes.trim_ascii_end()).unwrap();
    }
    let old: Hello = serde_json::from_slice(&std::fs::read(golden_dir().join("hello/protocol_1.json")).unwrap()).unwrap();
    assert!(!String::from_utf8_lossy(&serde_json::to_vec(&old).unwrap()).contains("capabilities"));
    assert_eq!(old.known_capabilities(), Capability::PROTOCOL_1);
}
