//! Dispatch: one request to its handler and back to one response. Above the handlers and
//! below the frame loop in `session.rs`, so a new capability (shells, services) is one
//! more handler module and one more arm here.

use pyro_protocol::{Request, Response};

use crate::request::ReqCtx;
use crate::{exec, fsops, port_forward, service, shell, tar_export, tar_import};

/// Runs one request to completion; handler failures become [`Response::Error`]. Requests
/// that may have written anywhere (exec, tar import) are followed by a `sync(2)` when the
/// agent is durable: no cheap signal tells whether a command changed metadata, and the
/// sync costs well under a millisecond when nothing is dirty. `WriteFile` flushes
/// exactly what it wrote itself (see `fsops.rs`).
pub async fn handle(request: Request, mut req: ReqCtx) -> Response {
    if !matches!(request, Request::WriteFile { .. } | Request::TarImport { .. } | Request::PortConnect { .. }) {
        // Nothing will read uploads for this stream: refuse them instead of letting them
        // pile up and stall the session reader.
        req.upload.close();
    }
    let writes = matches!(request, Request::Exec(_) | Request::TarImport { .. });
    let result = match request {
        Request::Ping => Ok(Response::Ok),
        Request::Exec(exec) => exec::run(exec, &req).await.map(Response::Exec),
        Request::ReadFile { path, max_bytes } => fsops::read_file(&path, max_bytes, &req).await.map(Response::Read),
        Request::WriteFile { path, mode, create_parents } => fsops::write_file(&path, mode, create_parents, &mut req).await.map(Response::Write),
        Request::List { path, recursive } => fsops::list(&path, recursive, &req).await.map(Response::List),
        Request::TarImport { destination } => tar_import::run(&destination, &mut req).await.map(Response::TarImport),
        Request::TarExport { path } => tar_export::run(&path, &req).await.map(Response::TarExport),
        Request::Shutdown => Ok(Response::Ok), // handled by the session loop
        Request::InstallSecrets { secrets } => {
            crate::secrets::install(secrets.into_iter().map(|s| (s.name, s.value)));
            Ok(Response::Ok)
        }
        Request::ShellOpen(open) => shell::open(open, &req).await.map(Response::Shell),
        Request::ShellRead(read) => shell::read(read).await.map(|r| Response::ShellRead(Box::new(r))),
        Request::ShellWrite(write) => shell::write(write).await.map(Response::Shell),
        Request::ShellSignal(signal) => shell::signal(signal).await.map(Response::Shell),
        Request::ShellClose { shell_id } => shell::close(&shell_id).await.map(Response::Shell),
        Request::ServiceStart(start) => service::start(start, &req.ctx).await.map(|s| Response::Service(Box::new(s))),
        Request::ServiceList => Ok(Response::ServiceList(service::list())),
        Request::ServiceLogs { name, tail_lines } => service::logs(&name, tail_lines, &req).await.map(|l| Response::ServiceLogs(Box::new(l))),
        Request::ServiceStop { name, grace_ms } => service::stop(&name, grace_ms).await.map(|s| Response::Service(Box::new(s))),
        Request::PortConnect { port } => port_forward::run(port, &mut req).await.map(|()| Response::Ok),
    };
    if writes && req.ctx.durable {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::sync() }).await;
    }
    result.unwrap_or_else(|message| Response::Error { message })
}
