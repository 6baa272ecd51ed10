//! Proves an installed image is right without booting it: the agent and os-release are
//! read out of the ext4 with the pure-Rust reader, and the kernel carries the PVH note.
//! Needs `debian:12-base` installed (scripts/setup.sh), so it runs from scripts/test.sh.

use pyro_core::disk_image::DiskImage;
use pyro_core::environments::{sha256_file, GUEST_AGENT_PATH};
use pyro_core::Pyro;

#[test]
#[ignore = "needs the debian:12-base image built by scripts/setup.sh"]
fn installed_image_is_right_offline() {
    let pyro = Pyro::from_env().unwrap();
    let info = pyro.inspect_environment("debian:12-base", true).unwrap();
    assert!(info.installed, "debian:12-base must be installed and verified: {:?}", info.state);
    let rootfs = info.rootfs.expect("rootfs artifact");
    let kernel = info.kernel.expect("kernel artifact");
    assert_eq!(sha256_file(&rootfs.path).unwrap(), rootfs.sha256);

    let image = DiskImage::open(&rootfs.path).unwrap();
    assert_eq!(image.list_names("/opt/pyro/bin").unwrap(), vec!["pyro-agent".to_string()]);
    let agent = image.read(GUEST_AGENT_PATH).unwrap();
    assert!(pyro_core::elf::is_static_x86_64(&agent), "the agent is a static x86_64 ELF");
    let os_release = String::from_utf8(image.read("/etc/os-release").unwrap()).unwrap();
    assert!(os_release.contains("VERSION_CODENAME=bookworm"), "{os_release}");
    assert!(image.list_names("/usr/share/man").map(|n| n.is_empty()).unwrap_or(true), "no man pages");
    assert!(image.list_names("/var/lib/apt/lists").map(|n| n.iter().all(|f| f == "partial" || f == "lock")).unwrap_or(true), "no apt lists");

    let vmlinux = std::fs::read(&kernel.path).unwrap();
    assert!(pyro_core::elf::has_pvh_entry_note(&vmlinux), "kernel is an ELF with the PVH entry note");
}
