//! The `pyro` command tree (clap). Every command of the public contract is here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// microVM sandboxes for coding agents.
#[derive(Debug, Parser)]
#[command(name = "pyro", version, about, propagate_version = true)]
pub struct Cli {
    /// Print results (and failures) as JSON on stdout; accepted anywhere on the command line.
    #[arg(long, global = true)]
    pub json: bool,
    /// Command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the curated guest environments (images).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Model Context Protocol server.
    #[command(subcommand)]
    Mcp(McpCommand),
    /// Run one command in a fresh microVM, then delete it.
    Run(RunArgs),
    /// Persistent workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Check this host and explain which VM backend will be used.
    Doctor(DoctorArgs),
    /// Prove create/start/exec/delete end to end.
    Demo(DemoArgs),
    /// Internal: the per-VM supervisor process.
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// The VM's directory.
        vm_dir: PathBuf,
    },
    /// Internal: the Python SDK's newline-delimited JSON channel on stdin/stdout.
    #[command(name = "__sdk", hide = true)]
    Sdk,
    /// Internal: runs a VMM that drops privileges, keeping its parent-death signal.
    #[command(name = "__vmm-guard", hide = true)]
    VmmGuard {
        /// The VMM and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<std::ffi::OsString>,
    },
}

/// `pyro env …`
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List catalog environments and whether they are installed.
    List,
    /// Install an environment (from a registry, else by building it locally).
    Pull(EnvPullArgs),
    /// Describe one environment.
    Inspect(EnvInspectArgs),
    /// Delete interrupted, outdated and unusable installs.
    Prune,
    /// Publish an installed environment to an OCI registry (maintainers).
    Publish(EnvPublishArgs),
}

/// `pyro env pull`
#[derive(Debug, Args)]
pub struct EnvPullArgs {
    /// Environment name, e.g. `debian:12`.
    pub environment: String,
    /// Reinstall even when a valid install exists.
    #[arg(long)]
    pub force: bool,
    /// Where to take the environment from.
    #[arg(long, value_enum, default_value = "auto")]
    pub source: pyro_core::environments::PullSource,
    /// Registry location (overrides PYRO_ENV_REGISTRY), e.g. `http://127.0.0.1:5000/pyro`.
    #[arg(long)]
    pub registry: Option<String>,
}

/// `pyro env inspect`
#[derive(Debug, Args)]
pub struct EnvInspectArgs {
    /// Environment name.
    pub environment: String,
    /// Re-hash the installed artifacts and report any mismatch.
    #[arg(long)]
    pub verify: bool,
}

/// `pyro env publish`
#[derive(Debug, Args)]
pub struct EnvPublishArgs {
    /// Environment name.
    pub environment: String,
    /// Registry location, e.g. `http://127.0.0.1:5000/pyro`.
    #[arg(long)]
    pub registry: String,
}

/// `pyro mcp …`
#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Serve MCP over stdio.
    Serve {
        /// Tool profile: `vm-run` (only vm_run), `workspace-core` (the workspace loop) or
        /// `workspace-full` (everything).
        // Checked by `Profile::from_str`, whose message is the SDK's for the same mistake.
        #[arg(long, default_value = "workspace-full")]
        profile: String,
    },
}

/// Resource limits shared by `run` and `workspace create`.
#[derive(Debug, Args, Clone)]
pub struct VmSizing {
    /// Virtual CPUs (1–8).
    #[arg(long, default_value_t = 1)]
    pub vcpu_count: u32,
    /// Guest memory in MiB (256–32768).
    #[arg(long, default_value_t = 1024)]
    pub mem_mib: u32,
    /// Opt into running on the host without isolation when no guest can boot.
    #[arg(long)]
    pub allow_host_compat: bool,
    /// Force a backend: firecracker, qemu-kvm, qemu-tcg, host_compat (also PYRO_BACKEND).
    #[arg(long)]
    pub backend: Option<String>,
    /// Keep the full guest console in the VM's serial log (slower boot).
    #[arg(long)]
    pub debug_console: bool,
    /// Boot a kernel instead of restoring a warm template (also PYRO_WARM_START=0).
    #[arg(long)]
    pub cold: bool,
}

/// `pyro run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Environment name, e.g. `debian:12`.
    pub environment: String,
    #[command(flatten)]
    pub sizing: VmSizing,
    /// Command timeout in seconds (exit code 124 when reached).
    #[arg(long, default_value_t = 30)]
    pub timeout_seconds: u64,
    /// Delete the VM after this many seconds even if the CLI is gone.
    #[arg(long, default_value_t = 600)]
    pub ttl_seconds: u64,
    /// Give the guest outbound network access.
    #[arg(long)]
    pub network: bool,
    /// The command, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `pyro doctor`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Platform to check.
    #[arg(long, default_value = "linux-x86_64")]
    pub platform: String,
}

/// `pyro demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Demo variant.
    #[command(subcommand)]
    pub variant: Option<DemoVariant>,
    /// Prove outbound network access instead of running `git --version`.
    #[arg(long)]
    pub network: bool,
}

/// `pyro demo …` variants.
#[derive(Debug, Subcommand)]
pub enum DemoVariant {
    /// Tool-calling loop against a local Ollama (OpenAI-compatible) model.
    Ollama {
        /// OpenAI-compatible base URL.
        #[arg(long, default_value = "http://localhost:11434/v1")]
        base_url: String,
        /// Model name.
        #[arg(long, default_value = "llama3.2:3b")]
        model: String,
        /// Verbose log lines.
        #[arg(short, long)]
        verbose: bool,
    },
}

/// Workspace id argument.
#[derive(Debug, Args, Clone)]
pub struct WorkspaceId {
    /// Workspace id.
    pub workspace_id: String,
}

/// `pyro workspace …`
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create and start a persistent workspace.
    Create(WorkspaceCreateArgs),
    /// List workspaces, most recently active first.
    List,
    /// Push host content into a started workspace.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Stop a workspace, keeping `/workspace`, snapshots and history.
    Stop(WorkspaceId),
    /// Start a stopped workspace without resetting `/workspace`.
    Start(WorkspaceId),
    /// Run one command in `/workspace`.
    Exec(WorkspaceExecArgs),
    /// Live file operations under `/workspace`.
    #[command(subcommand)]
    File(FileCommand),
    /// Export a file or directory from `/workspace` to the host.
    Export(ExportArgs),
    /// Apply patches.
    #[command(subcommand)]
    Patch(PatchCommand),
    /// Offline tools for a stopped workspace's disk.
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Compare `/workspace` with the create-time baseline.
    Diff(WorkspaceId),
    /// Named snapshots of `/workspace`.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Recreate the sandbox and restore `/workspace` from a snapshot.
    Reset(ResetArgs),
    /// Long-running services with readiness probes.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Persistent PTY shells.
    #[command(subcommand)]
    Shell(ShellCommand),
    /// Show one workspace.
    Status(WorkspaceId),
    /// The guest network's log: flow counts and the latest refused connections.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Change a workspace's name and labels.
    Update(UpdateArgs),
    /// Show a workspace's command history.
    Logs(WorkspaceId),
    /// Delete a workspace and everything it holds.
    Delete(WorkspaceId),
}

/// `pyro workspace create`
#[derive(Debug, Args)]
pub struct WorkspaceCreateArgs {
    /// Environment name.
    pub environment: String,
    #[command(flatten)]
    pub sizing: VmSizing,
    /// Delete the workspace after this many seconds (default: never).
    #[arg(long)]
    pub ttl_seconds: Option<u64>,
    /// Guest networking: off, egress, egress+published-ports.
    #[arg(long, default_value = "off")]
    pub network_policy: String,
    /// Narrow egress to this host name or CIDR (repeatable; needs a network policy).
    #[arg(long = "allow-host", value_name = "NAME|CIDR")]
    pub allow_hosts: Vec<String>,
    /// Seed `/workspace` from a directory or a .tar/.tar.gz/.tgz archive.
    #[arg(long)]
    pub seed_path: Option<PathBuf>,
    /// Human-readable name.
    #[arg(long)]
    pub name: Option<String>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Secret NAME=VALUE (repeatable).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Secret NAME=PATH read from a host file (repeatable).
    #[arg(long = "secret-file")]
    pub secret_files: Vec<String>,
    /// Print only the new workspace id.
    #[arg(long, conflicts_with = "json")]
    pub id_only: bool,
}

/// `pyro workspace network …`
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Flow counts and the latest refused flows (time, destination, name, rule).
    Log(WorkspaceId),
}

/// `pyro workspace sync …`
#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Import a host directory or archive into `/workspace`.
    Push {
        #[command(flatten)]
        id: WorkspaceId,
        /// Host directory or .tar/.tar.gz/.tgz archive.
        source_path: PathBuf,
        /// Destination under `/workspace`.
        #[arg(long, default_value = "/workspace")]
        dest: String,
    },
}

/// `pyro workspace exec`
#[derive(Debug, Args)]
pub struct WorkspaceExecArgs {
    #[command(flatten)]
    pub id: WorkspaceId,
    /// Command timeout in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_seconds: u64,
    /// Map a secret into the environment: SECRET[=ENV_VAR] (repeatable).
    #[arg(long = "secret-env")]
    pub secret_env: Vec<String>,
    /// The command, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `pyro workspace file …`
#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// List metadata for a path under `/workspace`.
    List(PathListArgs),
    /// Read a regular text file.
    Read(PathReadArgs),
    /// Create or replace a regular text file.
    Write {
        #[command(flatten)]
        id: WorkspaceId,
        /// Path under `/workspace`.
        path: String,
        /// The new content.
        #[arg(long, required_unless_present = "text_file", conflicts_with = "text_file", allow_hyphen_values = true)]
        text: Option<String>,
        /// Host file holding the new content.
        #[arg(long)]
        text_file: Option<PathBuf>,
    },
}

/// Listing arguments (`file list`, `disk list`).
#[derive(Debug, Args)]
pub struct PathListArgs {
    #[command(flatten)]
    pub id: WorkspaceId,
    /// Path to list.
    #[arg(default_value = "/workspace")]
    pub path: String,
    /// Descend into subdirectories.
    #[arg(long)]
    pub recursive: bool,
}

/// Reading arguments (`file read`, `disk read`).
#[derive(Debug, Args)]
pub struct PathReadArgs {
    #[command(flatten)]
    pub id: WorkspaceId,
    /// Path to read.
    pub path: String,
    /// Read at most this many bytes.
    #[arg(long, default_value_t = 65536)]
    pub max_bytes: u64,
    /// Print only the content.
    #[arg(long, conflicts_with = "json")]
    pub content_only: bool,
}

/// `pyro workspace export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub id: WorkspaceId,
    /// Path under `/workspace`.
    pub path: String,
    /// Host path to create.
    #[arg(long)]
    pub output: PathBuf,
}

/// `pyro workspace patch …`
#[derive(Debug, Subcommand)]
pub enum PatchCommand {
    /// Apply a unified diff (all or nothing).
    Apply {
        #[command(flatten)]
        id: WorkspaceId,
        /// Patch text (usually starts with `---`).
        #[arg(long, required_unless_present = "patch_file", conflicts_with = "patch_file", allow_hyphen_values = true)]
        patch: Option<String>,
        /// Host file holding the patch.
        #[arg(long)]
        patch_file: Option<PathBuf>,
    },
}

/// `pyro workspace disk …`
#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Copy the stopped rootfs as raw ext4 to the host.
    Export {
        #[command(flatten)]
        id: WorkspaceId,
        /// Host path to create.
        #[arg(long)]
        output: PathBuf,
    },
    /// List a path of the stopped rootfs offline.
    List(PathListArgs),
    /// Read a regular file of the stopped rootfs offline.
    Read(PathReadArgs),
}

/// `pyro workspace snapshot …`
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Capture `/workspace` under a name.
    Create(SnapshotNameArgs),
    /// List `baseline` and the named snapshots.
    List(WorkspaceId),
    /// Delete a named snapshot.
    Delete(SnapshotNameArgs),
}

/// Workspace id + snapshot name.
#[derive(Debug, Args)]
pub struct SnapshotNameArgs {
    #[command(flatten)]
    pub id: WorkspaceId,
    /// Snapshot name.
    pub snapshot_name: String,
}

/// `pyro workspace reset`
#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub id: WorkspaceId,
    /// Snapshot to restore.
    #[arg(long, default_value = "baseline")]
    pub snapshot: String,
}

/// `pyro workspace update`
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub id: WorkspaceId,
    /// New name.
    #[arg(long, conflicts_with = "clear_name")]
    pub name: Option<String>,
    /// Remove the name.
    #[arg(long)]
    pub clear_name: bool,
    /// Set label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Remove label KEY (repeatable).
    #[arg(long = "clear-label")]
    pub clear_labels: Vec<String>,
}

/// Workspace id + service name.
#[derive(Debug, Args)]
pub struct ServiceNameArgs {
    #[command(flatten)]
    pub id: WorkspaceId,
    /// Service name.
    pub service_name: String,
}

/// `pyro workspace service …`
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Start a named service and wait for its readiness probe.
    Start(ServiceStartArgs),
    /// List services.
    List(WorkspaceId),
    /// Show one service.
    Status(ServiceNameArgs),
    /// Show a service's output.
    Logs {
        #[command(flatten)]
        name: ServiceNameArgs,
        /// Last lines to show.
        #[arg(long, default_value_t = 200)]
        tail_lines: u64,
        /// Show everything.
        #[arg(long)]
        all: bool,
    },
    /// Stop a service.
    Stop(ServiceNameArgs),
}

/// `pyro workspace service start`
#[derive(Debug, Args)]
pub struct ServiceStartArgs {
    #[command(flatten)]
    pub name: ServiceNameArgs,
    /// Working directory under `/workspace`.
    #[arg(long, default_value = "/workspace")]
    pub cwd: String,
    /// Ready when this file exists.
    #[arg(long)]
    pub ready_file: Option<String>,
    /// Ready when HOST:PORT accepts TCP.
    #[arg(long)]
    pub ready_tcp: Option<String>,
    /// Ready when this URL answers 2xx/3xx.
    #[arg(long)]
    pub ready_http: Option<String>,
    /// Ready when this command exits 0.
    #[arg(long)]
    pub ready_command: Option<String>,
    /// Give up waiting for readiness after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub ready_timeout_seconds: u64,
    /// Probe interval.
    #[arg(long, default_value_t = 500)]
    pub ready_interval_ms: u64,
    /// Map a secret into the environment: SECRET[=ENV_VAR] (repeatable).
    #[arg(long = "secret-env")]
    pub secret_env: Vec<String>,
    /// Publish GUEST_PORT or HOST_PORT:GUEST_PORT on 127.0.0.1 (repeatable).
    #[arg(long)]
    pub publish: Vec<String>,
    /// The command, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Workspace id + shell id.
#[derive(Debug, Args)]
pub struct ShellIdArgs {
    #[command(flatten)]
    pub id: WorkspaceId,
    /// Shell id.
    pub shell_id: String,
}

/// `pyro workspace shell …`
#[derive(Debug, Subcommand)]
pub enum ShellCommand {
    /// Open a PTY shell.
    Open {
        #[command(flatten)]
        id: WorkspaceId,
        /// Working directory.
        #[arg(long, default_value = "/workspace")]
        cwd: String,
        /// Terminal columns.
        #[arg(long, default_value_t = 120, allow_negative_numbers = true)]
        cols: i64,
        /// Terminal rows.
        #[arg(long, default_value_t = 30, allow_negative_numbers = true)]
        rows: i64,
        /// Map a secret into the environment: SECRET[=ENV_VAR] (repeatable).
        #[arg(long = "secret-env")]
        secret_env: Vec<String>,
        /// Print only the shell id.
        #[arg(long, conflicts_with = "json")]
        id_only: bool,
    },
    /// Read shell output from a cursor.
    Read {
        #[command(flatten)]
        shell: ShellIdArgs,
        /// Character offset to read from.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        cursor: i64,
        /// Most characters to return.
        #[arg(long, default_value_t = 65536, allow_negative_numbers = true)]
        max_chars: i64,
        /// Render terminal control sequences away.
        #[arg(long)]
        plain: bool,
        /// Wait until the output has been idle this long (1–10000 ms).
        #[arg(long, allow_negative_numbers = true)]
        wait_for_idle_ms: Option<i64>,
    },
    /// Write input to the shell.
    Write {
        #[command(flatten)]
        shell: ShellIdArgs,
        /// Text to send.
        #[arg(long, allow_hyphen_values = true)]
        input: String,
        /// Do not append a newline.
        #[arg(long)]
        no_newline: bool,
    },
    /// Signal the shell's process group.
    Signal {
        #[command(flatten)]
        shell: ShellIdArgs,
        /// HUP, INT, TERM or KILL.
        #[arg(long, default_value = "INT")]
        signal: String,
    },
    /// Close the shell.
    Close(ShellIdArgs),
}
