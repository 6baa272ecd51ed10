//! The one-time "does KVM really boot a guest here" check, cached per host kernel, guest
//! kernel and QEMU version (see [`crate::vmm::select`]).

use std::path::Path;
use std::time::Duration;

use super::record::VmRecord;
use super::supervisor;
use crate::environments::{InstalledEnvironment, KERNEL_FILE};
use crate::fsutil::write_atomic;
use crate::paths::Dirs;
use crate::vmm::qemu::{locate, Accel, Qemu};
use crate::vmm::select::{host_kernel_release, KvmBootCheck, Selection};
use crate::vmm::{BackendKind, LaunchSpec};

/// A working KVM boots our kernel to the agent in well under a second; TCG needs ~1 s.
const KVM_CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Boots `installed` under QEMU/KVM once and records whether the agent answered.
pub async fn run(dirs: &Dirs, installed: &InstalledEnvironment, cache_file: &Path) {
    let Some(binary) = locate() else { return };
    let qemu = Qemu::new(binary, Accel::Kvm);
    let Ok(work) = tempfile::Builder::new().prefix("kvm-check-").tempdir_in(dirs.cache.as_path()) else { return };
    // Only a boot that actually ran says anything about KVM; other failures are not cached.
    let Ok(disk) = qemu.prepare_disk(&installed.rootfs, work.path()) else { return };
    let detail = {
        {
            let launch = LaunchSpec {
                vm_dir: work.path().to_path_buf(),
                kernel: installed.kernel.clone(),
                disk,
                vcpu_count: 1,
                mem_mib: 256,
                debug_console: false,
                restore: None,
                network: false,
            };
            let selection = Selection { backend: BackendKind::QemuKvm, reason: "KVM boot check".into() };
            let record = VmRecord::new("kvmcheck0000".into(), installed, launch, 60, selection, false);
            match supervisor::boot(&record, KVM_CHECK_TIMEOUT).await {
                Ok((mut child, _hello, _channel)) => {
                    crate::vmm::kill_group(&mut child);
                    let _ = child.wait().await;
                    Ok(())
                }
                Err(reason) => Err(reason),
            }
        }
    };
    let inconclusive = matches!(&detail, Err(reason) if reason.contains(supervisor::BOOT_TIMEOUT_MARK));
    let check = KvmBootCheck {
        host_kernel: host_kernel_release(),
        guest_kernel_sha256: installed.manifest.artifacts.get(KERNEL_FILE).map(|a| a.sha256.clone()).unwrap_or_default(),
        qemu_version: qemu.version().unwrap_or_default(),
        boots: detail.is_ok(),
        detail: match detail {
            Ok(()) => "our kernel booted to the agent under KVM".into(),
            Err(reason) if inconclusive => format!("the KVM boot check timed out, which proves nothing (re-checked within a day): {}", first_clause(&reason)),
            Err(reason) => format!("KVM is present but did not boot our kernel: {}", first_clause(&reason)),
        },
        inconclusive,
        checked_at: crate::fsutil::unix_now(),
    };
    let _ = write_atomic(cache_file, &serde_json::to_vec_pretty(&check).expect("check serialises"));
}

/// The boot failure plus the last thing the VMM or guest printed, kept short.
fn first_clause(reason: &str) -> String {
    let (head, log) = reason.split_once("; serial log: ").unwrap_or((reason, ""));
    let last = log.rsplit(" | ").next().unwrap_or("").trim();
    let text = if last.is_empty() || last == "(empty)" { head.to_string() } else { format!("{head} (last output: {last})") };
    // At most 400 characters, cut on a character boundary (paths may be non-ASCII).
    text.chars().take(400).collect()
}

#[cfg(test)]
mod tests {
    use super::first_clause;

    #[test]
    fn long_non_ascii_reasons_are_cut_on_a_character_boundary() {
        let reason = format!("guest boot failed: {}; serial log: x", "é".repeat(500));
        let clause = first_clause(&reason);
        assert_eq!(clause.chars().count(), 400);
    }
}
