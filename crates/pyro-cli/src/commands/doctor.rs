//! `pyro doctor`.

use pyro_core::{Pyro, Result};

use crate::cli::DoctorArgs;
use crate::output::{print_json, say, yes_no};

/// Prints the host report; exits 0 even when issues are found (they are listed).
pub async fn run(pyro: &Pyro, args: DoctorArgs, json: bool) -> Result<i32> {
    if args.platform != pyro_core::catalog::PLATFORM {
        return Err(pyro_core::Error::InvalidArgument(format!("unsupported platform '{}'; expected {}", args.platform, pyro_core::catalog::PLATFORM)));
    }
    let report = pyro.doctor().await;
    if json {
        print_json(&report);
        return Ok(0);
    }
    say!("Platform: {}", report.platform);
    say!("Runtime: {}", if report.runtime_ok { "PASS" } else { "FAIL" });
    let kvm = &report.kvm;
    say!(
        "KVM: exists={} readable={} writable={} boots_guest={}",
        yes_no(kvm.access.exists),
        yes_no(kvm.access.readable),
        yes_no(kvm.access.writable),
        kvm.boots_guest.map(yes_no).unwrap_or("not checked")
    );
    if let Some(check) = &kvm.boot_check {
        say!("KVM boot check: {check}");
    }
    for (name, binary) in [("Firecracker", &report.backends.firecracker), ("QEMU", &report.backends.qemu)] {
        match binary {
            Some(b) => say!("{name}: {} ({})", b.version, b.path.display()),
            None => say!("{name}: not found"),
        }
    }
    say!("Backend: {}", report.selected.backend.unwrap_or("none"));
    say!("Backend reason: {}", report.selected.reason);
    if let Some(detail) = report.selected.isolation_detail {
        say!("Isolation: {detail}");
    }
    let caps = &report.capabilities;
    say!("Capabilities: vm_boot={} guest_exec={} guest_network={}", yes_no(caps.vm_boot), yes_no(caps.guest_exec), yes_no(caps.guest_network));
    say!("Environment cache: {}", report.cache_dir.display());
    say!("State dir: {}", report.state_dir.display());
    say!("Installed environments: {}", if report.installed_environments.is_empty() { "none".into() } else { report.installed_environments.join(", ") });
    let net = &report.networking;
    for (vmm, link) in [("qemu", &net.qemu), ("firecracker", &net.firecracker)] {
        if link.available {
            say!("Network ({vmm}): {} to the user-space gateway", link.link);
        } else {
            say!("Network ({vmm}): unavailable ({}: {})", link.link, link.missing.join("; "));
        }
    }
    say!("Warm start: {}", report.warm_start.next_start);
    if !report.issues.is_empty() {
        say!("Issues:");
        for issue in &report.issues {
            say!("- {issue}");
        }
    }
    Ok(0)
}
