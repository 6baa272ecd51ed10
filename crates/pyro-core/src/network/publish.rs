//! Published ports: listeners on the host's `127.0.0.1` held by a VM's supervisor, each
//! accepted connection carried to `127.0.0.1:GUEST_PORT` inside the guest over the agent
//! channel ([`crate::guest::GuestClient::port_connect`]), so a service listening only on
//! guest loopback is reachable and no guest address is ever routed to.
//!
//! The supervisor serves [`PORTS_SOCKET`] (one JSON request line, one JSON answer line
//! per connection, same-user peers only). Listeners belong to a service: they close on
//! unpublish (service stop), when the service is seen not running (checked every
//! [`WATCH_EVERY`]), and with the supervisor (workspace stop, reset, delete, a kill).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::task::AbortHandle;

use crate::error::{Error, Result};
use crate::guest::GuestClient;
use crate::options::PortMapping;

/// The supervisor's publishing socket, in the VM directory.
pub const PORTS_SOCKET: &str = "ports.sock";
/// How often the supervisor checks that services with published ports still run.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 << 10;
/// Published ports per VM at most.
const MAX_PUBLISHED: usize = 64;
/// Connections carried at once per published port; more wait in the kernel's backlog.
const MAX_CONNECTIONS_PER_PORT: usize = 128;

/// One published port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Always `127.0.0.1`.
    pub host: String,
    /// Port on the host.
    pub host_port: u16,
    /// Port in the guest.
    pub guest_port: u16,
    /// Always `tcp`.
    pub protocol: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum PortsRequest {
    Publish { service: String, ports: Vec<PortMapping> },
    Unpublish { service: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PortsAnswer {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    ports: Vec<PublishedPort>,
}

/// Listeners by service name.
type Listeners = Arc<Mutex<HashMap<String, Vec<(PublishedPort, AbortHandle)>>>>;

/// Asks the supervisor of `vm_dir` to publish `ports` for `service`: all of them or, on
/// any failure (a host port already taken), none.
pub async fn publish(vm_dir: &Path, service: &str, ports: &[PortMapping]) -> Result<Vec<PublishedPort>> {
    let answer = ask(vm_dir, &PortsRequest::Publish { service: service.into(), ports: ports.to_vec() }).await?;
    match answer.error {
        Some(error) => Err(Error::Conflict(error)),
        None => Ok(answer.ports),
    }
}

/// Closes the listeners of `service` (nothing to do when it has none).
pub async fn unpublish(vm_dir: &Path, service: &str) -> Result<()> {
    let answer = ask(vm_dir, &PortsRequest::Unpublish { service: service.into() }).await?;
    answer.error.map_or(Ok(()), |e| Err(Error::Conflict(e)))
}

async fn ask(vm_dir: &Path, request: &PortsRequest) -> Result<PortsAnswer> {
    let socket = vm_dir.join(PORTS_SOCKET);
    let unreachable = |e: std::io::Error| Error::Unavailable(format!("the VM's supervisor does not publish ports ({e})"));
    let exchange = async {
        let mut stream = UnixStream::connect(&socket).await.map_err(unreachable)?;
        let mut line = serde_json::to_vec(request).expect("requests serialise");
        line.push(b'\n');
        stream.write_all(&line).await.map_err(unreachable)?;
        let mut answer = String::new();
        BufReader::new(stream).take(MAX_REQUEST).read_line(&mut answer).await.map_err(unreachable)?;
        serde_json::from_str::<PortsAnswer>(&answer).map_err(|e| Error::Unavailable(format!("the VM's supervisor answered badly: {e}")))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange).await.unwrap_or_else(|_| Err(Error::Unavailable("the VM's supervisor did not answer".into())))
}

/// The supervisor side: serves [`PORTS_SOCKET`] in `vm_dir` for the VM's life, carrying
/// connections through the relay at `control_socket`.
pub async fn serve(vm_dir: PathBuf, control_socket: PathBuf) {
    let path = vm_dir.join(PORTS_SOCKET);
    crate::vmm::remove_stale(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!("published ports unavailable: cannot bind {}: {e}", path.display());
            return;
        }
    };
    let publisher = Publisher { listeners: Listeners::default(), guest: Arc::new(GuestLink { control_socket, client: tokio::sync::Mutex::new(None) }) };
    tokio::spawn(publisher.clone().watch());
    while let Ok((stream, _)) = listener.accept().await {
        if !crate::host_process::same_user(&stream) {
            continue;
        }
        tokio::spawn(publisher.clone().answer(stream));
    }
}

/// The supervisor's own client of its relay, connected when first needed.
struct GuestLink {
    control_socket: PathBuf,
    client: tokio::sync::Mutex<Option<GuestClient>>,
}

impl GuestLink {
    async fn client(&self) -> Result<GuestClient> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let stream = UnixStream::connect(&self.control_socket).await.map_err(|e| Error::Unavailable(format!("the guest channel is gone: {e}")))?;
        let (client, _) = GuestClient::connect(stream, Duration::from_secs(10)).await?;
        *slot = Some(client.clone());
        Ok(client)
    }
}

#[derive(Clone)]
struct Publisher {
    listeners: Listeners,
    guest: Arc<GuestLink>,
}

impl Publisher {
    async fn answer(self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let answer = match BufReader::new(read).take(MAX_REQUEST).read_line(&mut line).await {
            Ok(_) => match serde_json::from_str::<PortsRequest>(&line) {
                Ok(PortsRequest::Publish { service, ports }) => match self.publish(&service, &ports).await {
                    Ok(ports) => PortsAnswer { error: None, ports },
                    Err(error) => PortsAnswer { error: Some(error), ports: Vec::new() },
                },
                Ok(PortsRequest::Unpublish { service }) => {
                    self.unpublish(&service);
                    PortsAnswer::default()
                }
                Err(e) => PortsAnswer { error: Some(format!("bad request: {e}")), ports: Vec::new() },
            },
            Err(e) => PortsAnswer { error: Some(format!("bad request: {e}")), ports: Vec::new() },
        };
        let mut bytes = serde_json::to_vec(&answer).expect("answers serialise");
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
    }

    /// Binds every port first, so a taken one leaves nothing published.
    async fn publish(&self, service: &str, ports: &[PortMapping]) -> std::result::Result<Vec<PublishedPort>, String> {
        PortMapping::validate_all(ports).map_err(|e| e.to_string())?;
        self.unpublish(service);
        let held: usize = self.listeners.lock().unwrap().values().map(Vec::len).sum();
        if held + ports.len() > MAX_PUBLISHED {
            return Err(format!("at most {MAX_PUBLISHED} ports can be published per workspace"));
        }
        let mut bound = Vec::new();
        for mapping in ports {
            let address = (Ipv4Addr::LOCALHOST, mapping.host_port.unwrap_or(0));
            let listener = TcpListener::bind(address).await.map_err(|e| match mapping.host_port {
                Some(port) => format!("cannot publish guest port {} on 127.0.0.1:{port}: {e}", mapping.guest_port),
                None => format!("cannot publish guest port {}: no free host port ({e})", mapping.guest_port),
            })?;
            let host_port = listener.local_addr().map_err(|e| e.to_string())?.port();
            let port = PublishedPort { host: "127.0.0.1".into(), host_port, guest_port: mapping.guest_port, protocol: "tcp".into() };
            bound.push((port, listener));
        }
        let mut published = Vec::new();
        let mut handles = Vec::new();
        for (port, listener) in bound {
            let task = tokio::spawn(carry(listener, port.guest_port, self.guest.clone()));
            handles.push((port.clone(), task.abort_handle()));
            published.push(port);
        }
        self.listeners.lock().unwrap().insert(service.to_string(), handles);
        Ok(published)
    }

    fn unpublish(&self, service: &str) {
        if let Some(handles) = self.listeners.lock().unwrap().remove(service) {
            for (_, handle) in handles {
                handle.abort();
            }
        }
    }

    /// Closes the listeners of services that no longer run.
    async fn watch(self) {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let names: Vec<String> = self.listeners.lock().unwrap().keys().cloned().collect();
            if names.is_empty() {
                continue;
            }
            let Ok(client) = self.guest.client().await else { continue };
            let Ok(services) = client.service_list().await else { continue };
            for name in names {
                let running = services.iter().any(|s| s.name == name && s.state == pyro_protocol::ServiceState::Running);
                if !running {
                    tracing::debug!("service '{name}' is not running; closing its published ports");
                    self.unpublish(&name);
                }
            }
        }
    }
}

/// Accepts connections on one published port until aborted; each is carried to the
/// guest port over the agent channel. Aborting drops the listener (the port closes) and
/// every connection task with it.
async fn carry(listener: TcpListener, guest_port: u16, guest: Arc<GuestLink>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS_PER_PORT));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let Ok((socket, _)) = listener.accept().await else { continue };
        let _ = socket.set_nodelay(true);
        let guest = guest.clone();
        connections.spawn(async move {
            let _permit = permit;
            match guest.client().await {
                Ok(client) => {
                    if let Err(e) = client.port_connect(guest_port, socket).await {
                        tracing::debug!("published port connection to guest port {guest_port} ended: {e}");
                    }
                }
                Err(e) => tracing::warn!("published port: no guest channel: {e}"),
            }
        });
        while connections.try_join_next().is_some() {}
    }
}
