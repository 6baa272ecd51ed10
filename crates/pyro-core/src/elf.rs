//! Minimal ELF inspection for the files pyro ships into guests: is an executable static,
//! and does a kernel carry the PVH entry note that lets QEMU `-M microvm` and Firecracker
//! boot the same `vmlinux`.

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH 32-bit entry point note.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;

/// One program header of a little-endian ELF64 image.
struct ProgramHeader {
    kind: u32,
    offset: usize,
    size: usize,
}

/// Program headers of a little-endian x86_64 ELF64, or `None` when `bytes` is not one.
fn program_headers(bytes: &[u8]) -> Option<Vec<ProgramHeader>> {
    if bytes.len() < 64 || &bytes[0..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(bytes.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(bytes.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(bytes.get(o..o + 8)?.try_into().ok()?) as usize);
    if u16_at(18)? != 62 {
        return None; // not EM_X86_64
    }
    let (phoff, phentsize, phnum) = (u64_at(32)?, u16_at(54)? as usize, u16_at(56)? as usize);
    (0..phnum)
        .map(|i| {
            let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
            Some(ProgramHeader { kind: u32_at(at)?, offset: u64_at(at + 8)?, size: u64_at(at + 32)? })
        })
        .collect()
}

/// True for an x86_64 ELF without a dynamic loader (`PT_INTERP`).
pub fn is_static_x86_64(bytes: &[u8]) -> bool {
    program_headers(bytes).map(|headers| headers.iter().all(|h| h.kind != PT_INTERP)).unwrap_or(false)
}

/// True when a `PT_NOTE` segment holds a `Xen` note of type `XEN_ELFNOTE_PHYS32_ENTRY`.
pub fn has_pvh_entry_note(bytes: &[u8]) -> bool {
    let Some(headers) = program_headers(bytes) else { return false };
    headers.iter().filter(|h| h.kind == PT_NOTE).any(|h| {
        let Some(notes) = h.offset.checked_add(h.size).and_then(|end| bytes.get(h.offset..end)) else { return false };
        let mut at = 0;
        while at + 12 <= notes.len() {
            let word = |o: usize| u32::from_le_bytes(notes[o..o + 4].try_into().unwrap()) as usize;
            let (namesz, descsz, kind) = (word(at), word(at + 4), word(at + 8) as u32);
            let name_start = at + 12;
            let name = notes.get(name_start..name_start + namesz).unwrap_or(&[]);
            if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY {
                return true;
            }
            at = name_start + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_NOTE segment holding `notes`.
    fn elf_with_notes(notes: &[u8]) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&PT_NOTE.to_le_bytes());
        elf[64 + 8..64 + 16].copy_from_slice(&120u64.to_le_bytes());
        elf[64 + 32..64 + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        elf.extend_from_slice(notes);
        elf
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n.extend_from_slice(desc);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n
    }

    #[test]
    fn finds_the_pvh_note_among_others() {
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4, 5]);
        notes.extend(note(b"Xen\0", 18, &0x100_0000u32.to_le_bytes()));
        assert!(has_pvh_entry_note(&elf_with_notes(&notes)));
        assert!(!has_pvh_entry_note(&elf_with_notes(&note(b"Xen\0", 17, &[0; 4]))));
        assert!(!has_pvh_entry_note(b"\x7fELF but truncated"));
    }

    #[test]
    fn static_detection() {
        assert!(is_static_x86_64(&elf_with_notes(&[])));
        assert!(!is_static_x86_64(&std::fs::read("/bin/sh").unwrap()), "Debian's /bin/sh is dynamic");
    }
}
