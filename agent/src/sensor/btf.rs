//! Kernel struct member offsets read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), so the payload sensor can tell a pipe or socket from a
//! regular file without any offset compiled into the program (aya's Rust eBPF has no
//! CO-RE relocations; this is the same idea done at load time).
//!
//! Only the small part of the BTF format needed to find named struct members is
//! parsed: the type section is walked once to index types by id.

use std::collections::HashMap;

use anyhow::{bail, Context as _, Result};
use mcpwatch_common::payload::FileWalk;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

struct Composite {
    members: Vec<Member>,
}

pub struct Btf {
    /// Structs and unions by type id (other kinds are skipped).
    composites: HashMap<u32, Composite>,
    by_name: HashMap<String, u32>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(
        b.get(off..off + 2).context("BTF truncated")?.try_into()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(
        b.get(off..off + 4).context("BTF truncated")?.try_into()?,
    ))
}

fn str_at(strings: &[u8], off: u32) -> String {
    let s = strings.get(off as usize..).unwrap_or_default();
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")
            .context("reading /sys/kernel/btf/vmlinux (kernel built without BTF?)")?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self> {
        if u16_at(data, 0)? != BTF_MAGIC {
            bail!("not little-endian BTF (bad magic)");
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .context("BTF type section")?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .context("BTF string section")?;

        let mut composites = HashMap::new();
        let mut by_name = HashMap::new();
        let mut pos = 0;
        let mut id = 1u32;
        while pos + 12 <= types.len() {
            let name_off = u32_at(types, pos)?;
            let info = u32_at(types, pos + 4)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            pos += 12;
            let extra = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0,
                other => bail!("unknown BTF kind {other} at type {id}"),
            };
            if kind == KIND_STRUCT || kind == KIND_UNION {
                let mut members = Vec::with_capacity(vlen);
                for i in 0..vlen {
                    let m = pos + i * 12;
                    let raw = u32_at(types, m + 8)?;
                    members.push(Member {
                        name: str_at(strings, u32_at(types, m)?),
                        type_id: u32_at(types, m + 4)?,
                        // With kind_flag the low 24 bits are the offset, the rest a bitfield size.
                        bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                    });
                }
                let name = str_at(strings, name_off);
                if kind == KIND_STRUCT && !name.is_empty() {
                    by_name.entry(name.clone()).or_insert(id);
                }
                composites.insert(id, Composite { members });
            }
            pos += extra;
            id += 1;
        }
        Ok(Self { composites, by_name })
    }

    /// Byte offset of `member` in `struct name`, looking inside anonymous structs and
    /// unions the way C does.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let id = *self
            .by_name
            .get(name)
            .with_context(|| format!("struct {name} not in kernel BTF"))?;
        self.find(id, member, 0)
            .map(|bits| bits / 8)
            .with_context(|| format!("struct {name} has no member {member}"))
    }

    fn find(&self, id: u32, member: &str, base_bits: u32) -> Option<u32> {
        let c = self.composites.get(&id)?;
        for m in &c.members {
            if m.name == member {
                return Some(base_bits + m.bit_offset);
            }
        }
        // Anonymous members: their type id may point through typedefs/modifiers, but
        // in practice anonymous members are direct struct/union types.
        c.members
            .iter()
            .filter(|m| m.name.is_empty())
            .find_map(|m| self.find(m.type_id, member, base_bits + m.bit_offset))
    }
}

/// The offsets the payload sensor walks (current task → fd table → file → inode, and
/// for sockets file → socket → sock), as the global the kernel programs read.
pub fn file_walk(btf: &Btf) -> Result<FileWalk> {
    // `struct sock` starts with `struct sock_common __sk_common`.
    let base = btf.member_offset("sock", "__sk_common")?;
    let sk = |m: &str| btf.member_offset("sock_common", m).map(|o| base + o);
    Ok(FileWalk {
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdt_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdt_fd: btf.member_offset("fdtable", "fd")?,
        file_inode: btf.member_offset("file", "f_inode")?,
        file_private_data: btf.member_offset("file", "private_data")?,
        inode_mode: btf.member_offset("inode", "i_mode")?,
        inode_ino: btf.member_offset("inode", "i_ino")?,
        socket_type: btf.member_offset("socket", "type")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        sock_common_family: sk("skc_family")?,
        skc_num: sk("skc_num")?,
        skc_dport: sk("skc_dport")?,
        skc_rcv_saddr: sk("skc_rcv_saddr")?,
        skc_daddr: sk("skc_daddr")?,
        skc_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
        skc_v6_daddr: sk("skc_v6_daddr")?,
        valid: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_file_walk_offsets_from_this_kernel() {
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        let off = file_walk(&btf).unwrap();
        // Stable facts: `struct file` members are not at 0 except possibly f_lock/union,
        // the socket family follows the addresses in sock_common.
        assert!(off.task_files > 0 && off.files_fdt > 0 && off.file_inode > 0);
        assert!(off.fdt_fd > 0, "max_fds precedes fd in struct fdtable");
        assert!(off.sock_common_family >= 8);
        assert!(btf.member_offset("task_struct", "no_such_member").is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Btf::parse(&[0u8; 4]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 255, 255, 0, 0]).is_err());
    }
}
