//! [`GuestClient`] against a hostile fake agent on a socket pair: the host must enforce
//! its own caps and deadlines whatever the guest sends (or does not send).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyro_core::guest::{ClientLimits, DirEntry, EntryKind, ExecRequest, ExecResult, GuestClient, GuestError, ListResult, OutputChunk};
use pyro_protocol::{read_frame, write_frame, DataChannel, Frame, FrameKind, Hello, ReadResult, Request, Response, TarExportResult, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

fn hello() -> Hello {
    Hello { protocol_version: PROTOCOL_VERSION, agent_version: "hostile".into(), kernel_release: "fake".into(), uptime_ms: None, capabilities: None }
}

/// Small deadlines so the tests run in well under a second each.
fn quick() -> ClientLimits {
    ClientLimits {
        exec_grace: Duration::from_millis(200),
        call_deadline: Duration::from_millis(300),
        per_mib: Duration::from_millis(10),
        transfer_idle: Duration::from_millis(300),
        consumer_stall: Duration::from_millis(300),
        ..ClientLimits::default()
    }
}

/// The agent's side of a connected client.
struct Fake {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
}

async fn connect(limits: ClientLimits) -> (GuestClient, Fake) {
    let (host, mut agent) = UnixStream::pair().unwrap();
    let greeter = tokio::spawn(async move {
        loop {
            let frame = read_frame(&mut agent).await.unwrap().expect("a knock");
            if frame.kind == FrameKind::Hello {
                write_frame(&mut agent, &Frame::json(0, FrameKind::Hello, &hello())).await.unwrap();
                return agent;
            }
        }
    });
    let (client, _) = GuestClient::connect_with_limits(host, Duration::from_secs(5), limits).await.expect("hello");
    let (rd, wr) = greeter.await.unwrap().into_split();
    (client, Fake { rd, wr })
}

impl Fake {
    /// The next non-knock frame from the host.
    async fn frame(&mut self) -> Frame {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut self.rd))
                .await
                .expect("a frame from the host in time")
                .unwrap()
                .expect("the host closed the channel");
            if frame.kind != FrameKind::Hello {
                return frame;
            }
        }
    }

    async fn request(&mut self) -> (u32, Request) {
        let frame = self.frame().await;
        assert_eq!(frame.kind, FrameKind::Request);
        (frame.stream, frame.parse_json().unwrap())
    }

    /// Waits for the host to cancel `stream` (skipping anything else it sends).
    async fn expect_cancel(&mut self, stream: u32) {
        loop {
            let frame = self.frame().await;
            if frame.kind == FrameKind::Cancel && frame.stream == stream {
                return;
            }
        }
    }

    async fn send(&mut self, frame: &Frame) {
        write_frame(&mut self.wr, frame).await.unwrap();
    }

    async fn respond(&mut self, stream: u32, response: &Response) {
        self.send(&Frame::json(stream, FrameKind::Response, response)).await;
    }
}

/// Fails the test (instead of hanging it) when the host-side deadline under test is broken.
async fn bounded<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), call).await.expect("the host-side deadline did not fire")
}

fn exec_request(timeout_ms: u64, max_output_bytes: u64) -> ExecRequest {
    ExecRequest { command: "yes".into(), env: BTreeMap::new(), secret_env: BTreeMap::new(), cwd: None, timeout_ms, max_output_bytes }
}

/// What a lying agent reports: nothing truncated, hardly any output.
fn lying_result(timed_out: bool) -> ExecResult {
    ExecResult { exit_code: 0, duration_ms: 1, timed_out, stdout_bytes: 10, stderr_bytes: 10, stdout_truncated: false, stderr_truncated: false }
}

#[tokio::test]
async fn exec_output_past_max_output_bytes_is_dropped_and_flagged() {
    let (client, mut fake) = connect(quick()).await;
    const CAP: u64 = 1000;
    const FLOOD: usize = 32 << 20;
    let agent = tokio::spawn(async move {
        let (stream, request) = fake.request().await;
        assert!(matches!(request, Request::Exec(ref e) if e.max_output_bytes == CAP));
        let chunk = vec![b'y'; 256 * 1024];
        for _ in 0..FLOOD / chunk.len() {
            fake.send(&Frame::data(stream, DataChannel::Stdout, &chunk)).await;
            fake.send(&Frame::data(stream, DataChannel::Stderr, &chunk)).await;
        }
        fake.respond(stream, &Response::Exec(lying_result(false))).await;
        fake
    });
    let live_stdout = Arc::new(AtomicUsize::new(0));
    let live_stderr = Arc::new(AtomicUsize::new(0));
    let (lo, le) = (live_stdout.clone(), live_stderr.clone());
    let live = move |chunk: OutputChunk<'_>| match chunk {
        OutputChunk::Stdout(b) => {
            lo.fetch_add(b.len(), Ordering::Relaxed);
        }
        OutputChunk::Stderr(b) => {
            le.fetch_add(b.len(), Ordering::Relaxed);
        }
    };
    let out = client.exec_streaming(exec_request(60_000, CAP), Some(&live)).await.unwrap();
    agent.await.unwrap();
    assert_eq!(out.stdout.len() as u64, CAP);
    assert_eq!(out.stderr.len() as u64, CAP);
    assert!(out.result.stdout_truncated && out.result.stderr_truncated, "{:?}", out.result);
    assert_eq!(out.result.stdout_bytes, FLOOD as u64);
    assert_eq!(out.result.stderr_bytes, FLOOD as u64);
    assert_eq!(live_stdout.load(Ordering::Relaxed) as u64, CAP);
    // Stderr may reach the live view a little past the cap (room for the timeout notice).
    assert!(live_stderr.load(Ordering::Relaxed) as u64 <= CAP + 256);
}

#[tokio::test]
async fn exec_with_caps_what_reaches_the_callback() {
    let (client, mut fake) = connect(quick()).await;
    let agent = tokio::spawn(async move {
        let (stream, _) = fake.request().await;
        for _ in 0..100 {
            fake.send(&Frame::data(stream, DataChannel::Stdout, &[b'x'; 1000])).await;
        }
        fake.respond(stream, &Response::Exec(lying_result(false))).await;
    });
    let mut seen = 0usize;
    let result = client
        .exec_with(exec_request(60_000, 4096), |chunk| {
            if let OutputChunk::Stdout(b) = chunk {
                seen += b.len();
            }
        })
        .await
        .unwrap();
    agent.await.unwrap();
    assert_eq!(seen, 4096);
    assert!(result.stdout_truncated);
    assert!(!result.stderr_truncated);
}

/// The agent forwards its "command timed out" line even past the cap; the host keeps it
/// (and only it) when the result says the command timed out.
#[tokio::test]
async fn the_timeout_notice_survives_a_full_stderr() {
    let (client, mut fake) = connect(quick()).await;
    const CAP: u64 = 100;
    let notice = b"\ncommand timed out after 1s\n";
    let agent = tokio::spawn(async move {
        let (stream, _) = fake.request().await;
        fake.send(&Frame::data(stream, DataChannel::Stderr, &[b'e'; CAP as usize])).await;
        fake.send(&Frame::data(stream, DataChannel::Stderr, notice)).await;
        let mut result = lying_result(true);
        result.exit_code = 124;
        result.stderr_truncated = true;
        fake.respond(stream, &Response::Exec(result)).await;
        // Second exec: same bytes, but not timed out, so the extra bytes are cut.
        let (stream, _) = fake.request().await;
        fake.send(&Frame::data(stream, DataChannel::Stderr, &[b'e'; CAP as usize])).await;
        fake.send(&Frame::data(stream, DataChannel::Stderr, notice)).await;
        fake.respond(stream, &Response::Exec(lying_result(false))).await;
    });
    let out = client.exec(exec_request(1000, CAP)).await.unwrap();
    assert_eq!(out.stderr.len(), CAP as usize + notice.len());
    assert!(out.stderr.ends_with(notice));
    let out = client.exec(exec_request(1000, CAP)).await.unwrap();
    agent.await.unwrap();
    assert_eq!(out.stderr.len(), CAP as usize);
    assert!(out.result.stderr_truncated);
}

#[tokio::test]
async fn read_file_refuses_more_than_max_bytes_and_cancels() {
    let (client, mut fake) = connect(quick()).await;
    let agent = tokio::spawn(async move {
        let (stream, request) = fake.request().await;
        assert!(matches!(request, Request::ReadFile { max_bytes: 4, .. }));
        fake.send(&Frame::data(stream, DataChannel::Download, &vec![0u8; 1 << 20])).await;
        fake.expect_cancel(stream).await;
        // A late, lying response is ignored.
        fake.respond(stream, &Response::Read(ReadResult { size_bytes: 4, truncated: false })).await;
        fake
    });
    let err = client.read_file("/etc/passwd", 4).await.unwrap_err();
    assert!(matches!(err, GuestError::Protocol(_)), "{err:?}");
    assert!(err.to_string().contains("more than the 4 bytes"), "{err}");
    let mut fake = agent.await.unwrap();
    // The connection still works.
    let pinger = tokio::spawn(async move {
        let (stream, request) = fake.request().await;
        assert_eq!(request, Request::Ping);
        fake.respond(stream, &Response::Ok).await;
    });
    client.ping().await.unwrap();
    pinger.await.unwrap();
}

#[tokio::test]
async fn read_file_within_max_bytes_is_accepted() {
    let (client, mut fake) = connect(quick()).await;
    let agent = tokio::spawn(async move {
        let (stream, _) = fake.request().await;
        fake.send(&Frame::data(stream, DataChannel::Download, b"abcd")).await;
        fake.respond(stream, &Response::Read(ReadResult { size_bytes: 10, truncated: true })).await;
    });
    let read = client.read_file("/f", 4).await.unwrap();
    agent.await.unwrap();
    assert_eq!(read.content, b"abcd");
    assert!(read.truncated);
}

#[tokio::test]
async fn an_exec_the_guest_never_answers_times_out_and_is_cancelled() {
    let (client, mut fake) = connect(quick()).await;
    let agent = tokio::spawn(async move {
        let (stream, _) = fake.request().await;
        fake.expect_cancel(stream).await;
    });
    let started = Instant::now();
    let err = bounded(client.exec(exec_request(100, 1 << 20))).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, GuestError::Timeout { op: "exec", after } if after == Duration::from_millis(300)), "{err:?}");
    assert_eq!(err.to_string(), "the guest agent did not answer exec within 0.3s");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    agent.await.unwrap();
}

#[tokio::test]
async fn small_calls_the_guest_never_answers_time_out() {
    let (client, mut fake) = connect(quick()).await;
    let agent = tokio::spawn(async move {
        for _ in 0..4 {
            let (stream, _) = fake.request().await;
            fake.expect_cancel(stream).await;
        }
    });
    let timed_out = |r: Result<(), GuestError>, op: &str| match r {
        Err(GuestError::Timeout { op: got, .. }) if got == op => {}
        other => panic!("{op}: expected a timeout, got {other:?}"),
    };
    timed_out(bounded(client.ping()).await, "ping");
    timed_out(bounded(client.list("/", true)).await.map(drop), "list");
    timed_out(bounded(client.read_file("/f", 100)).await.map(drop), "read_file");
    timed_out(bounded(client.write_file("/f", b"x", None, false)).await.map(drop), "write_file");
    agent.await.unwrap();
}

#[tokio::test]
async fn default_deadlines_are_the_documented_ones() {
    let limits = ClientLimits::default();
    assert_eq!(limits.exec_grace, Duration::from_secs(10));
    assert_eq!(limits.call_deadline, Duration::from_secs(60));
    assert_eq!(limits.transfer_idle, Duration::from_secs(60));
    let err = GuestError::Timeout { op: "exec", after: Duration::from_millis(60_000) + limits.exec_grace };
    assert_eq!(err.to_string(), "the guest agent did not answer exec within 70s");
}

#[tokio::test]
async fn a_silent_tar_export_stalls_but_a_slow_one_does_not() {
    let (client, mut fake) = connect(quick()).await;
    let agent = tokio::spawn(async move {
        // 1: a little data, then silence.
        let (stream, _) = fake.request().await;
        fake.send(&Frame::data(stream, DataChannel::Download, b"partial")).await;
        fake.expect_cancel(stream).await;
        // 2: a trickle well inside the idle limit, for longer than the idle limit.
        let (stream, _) = fake.request().await;
        for _ in 0..8 {
            fake.send(&Frame::data(stream, DataChannel::Download, b"0123456789")).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        fake.respond(stream, &Response::TarExport(TarExportResult { kind: EntryKind::Directory, entry_count: 1, bytes_written: 80 })).await;
    });
    let mut sink = Vec::new();
    let err = bounded(client.tar_export("/workspace", &mut sink)).await.unwrap_err();
    assert!(matches!(err, GuestError::Stalled { op: "tar_export", .. }), "{err:?}");
    assert_eq!(err.to_string(), "the guest agent made no progress on tar_export for 0.3s");
    let mut sink = Vec::new();
    let result = client.tar_export("/workspace", &mut sink).await.unwrap();
    assert_eq!(result.bytes_written, 80);
    assert_eq!(sink.len(), 80);
    agent.await.unwrap();
}

#[tokio::test]
async fn a_tar_import_the_guest_stops_taking_stalls() {
    let (client, mut fake) = connect(quick()).await;
    let agent = tokio::spawn(async move {
        let (stream, _) = fake.request().await;
        // Take the upload but never answer.
        loop {
            let frame = fake.frame().await;
            if frame.kind == FrameKind::Cancel && frame.stream == stream {
                return;
            }
        }
    });
    let archive = vec![0u8; 1 << 20];
    let err = bounded(client.tar_import("/workspace", &archive[..])).await.unwrap_err();
    assert!(matches!(err, GuestError::Stalled { op: "tar_import", .. }), "{err:?}");
    agent.await.unwrap();
}

#[tokio::test]
async fn list_responses_are_bounded() {
    let limits = ClientLimits { max_list_entries: 10, ..quick() };
    let (client, mut fake) = connect(limits).await;
    let entry = |i: usize| DirEntry { path: format!("/w/{i}"), kind: EntryKind::File, size_bytes: 0, mode: 0o644, link_target: None };
    let agent = tokio::spawn(async move {
        let (stream, _) = fake.request().await;
        let listing = ListResult { root: entry(0), entries: (0..11).map(entry).collect() };
        fake.respond(stream, &Response::List(listing)).await;
        let (stream, _) = fake.request().await;
        let listing = ListResult { root: entry(0), entries: (0..10).map(entry).collect() };
        fake.respond(stream, &Response::List(listing)).await;
    });
    let err = client.list("/w", true).await.unwrap_err();
    assert!(matches!(err, GuestError::Protocol(_)), "{err:?}");
    assert_eq!(client.list("/w", true).await.unwrap().entries.len(), 10);
    agent.await.unwrap();
}

#[tokio::test]
async fn huge_agent_error_messages_are_cut() {
    let (client, mut fake) = connect(quick()).await;
    let agent = tokio::spawn(async move {
        let (stream, _) = fake.request().await;
        fake.respond(stream, &Response::Error { message: "é".repeat(300_000) }).await;
    });
    let err = client.ping().await.unwrap_err();
    assert!(matches!(err, GuestError::Agent(ref m) if m.len() <= 4100), "{}", err.to_string().len());
    agent.await.unwrap();
}

/// The connection is accepted but nothing ever answers (e.g. a SIGSTOPped supervisor).
#[tokio::test]
async fn connect_to_a_silent_peer_fails_at_the_deadline() {
    let (host, _silent) = UnixStream::pair().unwrap();
    let started = Instant::now();
    let err = bounded(GuestClient::connect(host, Duration::from_millis(400))).await.unwrap_err();
    assert!(matches!(err, GuestError::HelloTimeout(d) if d == Duration::from_millis(400)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(err.to_string(), "the guest agent did not say hello within 0.4s (the VM or its supervisor is not responding)");
}

/// A call whose consumer stops reading holds up the other calls on the connection for at
/// most `consumer_stall`; then it is cancelled and the others go on.
#[tokio::test]
async fn a_stuck_consumer_does_not_block_other_calls() {
    // As in production, the stall limit is well below the other calls' own deadline.
    let limits = ClientLimits { call_queue_frames: 2, call_deadline: Duration::from_secs(3), ..quick() };
    let (client, mut fake) = connect(limits).await;
    let (sink, mut sink_reader) = tokio::io::duplex(64);
    let export_client = client.clone();
    let export = tokio::spawn(async move { export_client.tar_export("/big", sink).await });
    let (export_stream, _) = fake.request().await;
    let ping_client = client.clone();
    let ping = tokio::spawn(async move { ping_client.ping().await });
    let (ping_stream, _) = fake.request().await;
    let (mut rd, mut wr) = (fake.rd, fake.wr);
    let flood = tokio::spawn(async move {
        for _ in 0..64 {
            write_frame(&mut wr, &Frame::data(export_stream, DataChannel::Download, &[7u8; 64 * 1024])).await.unwrap();
        }
        write_frame(&mut wr, &Frame::json(ping_stream, FrameKind::Response, &Response::Ok)).await.unwrap();
        wr
    });
    // Nobody reads the sink: the export is stuck; the ping must still finish.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), ping).await.expect("ping was blocked by the stuck export").unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    // The export was cancelled in the guest...
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut rd)).await.unwrap().unwrap().unwrap();
        if frame.kind == FrameKind::Cancel && frame.stream == export_stream {
            break;
        }
    }
    flood.await.unwrap();
    // ...and fails once its sink moves again.
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while sink_reader.read(&mut buf).await.unwrap_or(0) > 0 {}
    });
    let err = tokio::time::timeout(Duration::from_secs(5), export).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(err, GuestError::SlowConsumer { op: "tar_export", .. }), "{err:?}");
}

/// While a call's consumer is slow the host stops reading (backpressure to the guest)
/// instead of buffering: a flooding guest gets only a few frames in.
#[tokio::test]
async fn the_host_buffers_a_bounded_amount_per_call() {
    let limits = ClientLimits { call_queue_frames: 4, consumer_stall: Duration::from_secs(30), ..quick() };
    let (client, mut fake) = connect(limits).await;
    let (sink, sink_reader) = tokio::io::duplex(64);
    let export = tokio::spawn(async move { client.tar_export("/big", sink).await });
    let (stream, _) = fake.request().await;
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    let mut wr = fake.wr;
    let flood = tokio::spawn(async move {
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..512 {
            if write_frame(&mut wr, &Frame::data(stream, DataChannel::Download, &chunk)).await.is_err() {
                return;
            }
            counter.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let in_flight = written.load(Ordering::Relaxed);
    // 4 queued + 1 the reader holds + 1 in the sink write + kernel socket buffers.
    assert!(in_flight <= 12 << 20, "the guest got {} MiB in while nothing was consumed", in_flight >> 20);
    flood.abort();
    export.abort();
    drop(sink_reader);
}

/// A newer agent's unknown response kind fails only that call, with a typed error; the
/// connection stays usable. A malformed response is a protocol error, also per call.
#[tokio::test]
async fn unknown_and_malformed_responses_fail_only_their_call() {
    let (client, mut fake) = connect(quick()).await;
    let agent = tokio::spawn(async move {
        let (stream, _) = fake.request().await;
        fake.send(&Frame { stream, kind: FrameKind::Response, payload: br#"{"result":"teleported","to":"mars"}"#.to_vec() }).await;
        let (stream, _) = fake.request().await;
        fake.send(&Frame { stream, kind: FrameKind::Response, payload: br#"{"result":"read","size_bytes":"many"}"#.to_vec() }).await;
        let (stream, _) = fake.request().await;
        fake.respond(stream, &Response::Ok).await;
        fake
    });
    let err = bounded(client.ping()).await.unwrap_err();
    assert!(matches!(err, GuestError::UnknownResponse { op: "ping", ref tag } if tag == "teleported"), "{err:?}");
    assert!(err.to_string().contains("newer protocol"), "{err}");
    let err = bounded(client.read_file("/a", 10)).await.unwrap_err();
    assert!(matches!(err, GuestError::Protocol(_)), "{err:?}");
    bounded(client.ping()).await.unwrap();
    drop(agent.await.unwrap());
}

/// An agent that answers `unsupported` (it does not know the request) gives the typed
/// unavailable error, not an agent failure.
#[tokio::test]
async fn an_unsupported_answer_is_unavailable() {
    let (client, mut fake) = connect(quick()).await;
    let agent = tokio::spawn(async move {
        let (stream, request) = fake.request().await;
        fake.respond(stream, &Response::Unsupported { op: request.op().into(), message: "unknown request".into() }).await;
    });
    let err = bounded(client.list("/w", false)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("does not support list"), "{err}");
    agent.await.unwrap();
}

/// Corrupt and truncated frames from the guest end the connection with a typed error on
/// every pending call: no panic, no hang.
#[tokio::test]
async fn corrupt_or_truncated_frames_close_the_channel() {
    let cases: [&[u8]; 3] = [
        // Unknown frame kind 99.
        &[0, 0, 0, 0, 0, 0, 0, 1, 99],
        // A header announcing 100 payload bytes, then the stream ends.
        &[0, 0, 0, 100, 0, 0, 0, 1, 4, b'{'],
        // A header cut short.
        &[0, 0, 0],
    ];
    for bytes in cases {
        let (client, mut fake) = connect(quick()).await;
        let pending = {
            let client = client.clone();
            tokio::spawn(async move { client.exec(exec_request(0, 10)).await })
        };
        let _ = fake.request().await;
        fake.wr.write_all(bytes).await.unwrap();
        if bytes.len() != 9 {
            // A truncated frame is only known to be truncated at the end of the stream.
            fake.wr.shutdown().await.unwrap();
        }
        let err = bounded(pending).await.unwrap().unwrap_err();
        assert!(err.is_channel_error(), "{bytes:?}: {err:?}");
        bounded(client.closed()).await;
        assert!(matches!(bounded(client.ping()).await, Err(GuestError::ChannelClosed)));
        drop(fake);
    }
}
