//! tracefs: finding (or mounting) it, and reading tracepoint record layouts
//! from `events/<category>/<name>/format`.

use std::{ffi::CString, fs, path::PathBuf};

use bpfcap_common::SockStateLayout;

use crate::error::{Error, Result};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount point, mounting it at /sys/kernel/tracing if nothing is
/// mounted yet (needs CAP_SYS_ADMIN). Tracepoint attachment needs it.
pub fn ensure_mounted() -> Result<PathBuf> {
    for p in CANDIDATES.iter().map(PathBuf::from) {
        match fs::metadata(p.join("events")) {
            Ok(m) if m.is_dir() => return Ok(p),
            // Mounted (mode 0700 by default) but this user may not look inside.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Error::Privilege {
                    what: format!("reading tracefs ({}: tracepoint ids and record layouts)", p.display()),
                    needed: "read access to it: CAP_DAC_READ_SEARCH, or tracefs mounted with gid= a group of yours",
                })
            }
            _ => {}
        }
    }
    let target = CString::new(CANDIDATES[0]).expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EPERM) {
            return Err(Error::Privilege {
                what: format!("mounting tracefs on {} (nothing is mounted there)", CANDIDATES[0]),
                needed: "CAP_SYS_ADMIN, or mount it first: `mount -t tracefs tracefs /sys/kernel/tracing`",
            });
        }
        return Err(Error::KernelFeature {
            feature: "tracefs".into(),
            reason: format!(
                "not mounted and mounting it on {} failed: {err} (mount it: `mount -t tracefs tracefs {}`)",
                CANDIDATES[0], CANDIDATES[0]
            ),
        });
    }
    Ok(PathBuf::from(CANDIDATES[0]))
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The C declaration without the name, e.g. `const char *`, `__u8[4]`.
    pub ctype: String,
    pub name: String,
    pub offset: u16,
    pub size: u16,
    pub signed: bool,
}

impl Field {
    /// `__data_loc` fields hold `(len << 16) | offset` of data inside the record.
    pub fn is_data_loc(&self) -> bool {
        self.ctype.starts_with("__data_loc")
    }

    /// A pointer to a NUL-terminated string (user memory for syscalls).
    pub fn is_string_pointer(&self) -> bool {
        self.size == 8 && self.ctype.replace(' ', "").ends_with("char*")
    }

    pub fn is_array(&self) -> bool {
        self.ctype.contains('[')
    }
}

/// Parses a `format` file's `field:` lines (the `common_*` fields included).
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines().filter_map(parse_field_line).collect()
}

fn parse_field_line(line: &str) -> Option<Field> {
    let line = line.trim();
    let rest = line.strip_prefix("field:")?;
    let mut parts = rest.split(';').map(str::trim);
    let decl = parts.next()?;
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for p in parts {
        if let Some(v) = p.strip_prefix("offset:") {
            offset = v.parse().ok();
        } else if let Some(v) = p.strip_prefix("size:") {
            size = v.parse().ok();
        } else if let Some(v) = p.strip_prefix("signed:") {
            signed = v == "1";
        }
    }
    // The name is the last identifier; a trailing array suffix belongs to the
    // type (`__u8 saddr[4]`), as does one before the name (`__data_loc char[] name`).
    let (decl_no_array, array) = match decl.rfind('[') {
        Some(i) if decl.ends_with(']') => (&decl[..i], &decl[i..]),
        _ => (decl, ""),
    };
    let (sep, c) = decl_no_array.char_indices().rfind(|&(_, c)| !(c.is_alphanumeric() || c == '_'))?;
    let name_start = sep + c.len_utf8();
    let name = decl_no_array[name_start..].to_owned();
    let ctype = format!("{}{}", decl_no_array[..name_start].trim(), array);
    Some(Field { ctype, name, offset: offset?, size: size?, signed })
}

/// The fields of tracepoint `category:name`.
pub fn tracepoint_fields(category: &str, name: &str) -> Result<Vec<Field>> {
    let root = ensure_mounted()?;
    let path = root.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).map_err(|e| Error::KernelFeature {
        feature: format!("tracepoint {category}:{name}"),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    Ok(parse_format(&text))
}

/// Where the `sock:inet_sock_set_state` fields are on this kernel.
pub fn sock_state_layout(fields: &[Field]) -> SockStateLayout {
    let at = |n: &str| fields.iter().find(|f| f.name == n).map(|f| f.offset);
    let get = || -> Option<SockStateLayout> {
        Some(SockStateLayout {
            oldstate: at("oldstate")?,
            newstate: at("newstate")?,
            sport: at("sport")?,
            dport: at("dport")?,
            family: at("family")?,
            protocol: at("protocol")?,
            saddr: at("saddr")?,
            daddr: at("daddr")?,
            saddr_v6: at("saddr_v6")?,
            daddr_v6: at("daddr_v6")?,
            valid: 1,
            _pad: 0,
        })
    };
    get().unwrap_or(SockStateLayout::UNKNOWN)
}

/// Checks the layout every syscall tracepoint has had since they exist
/// (`__syscall_nr` at 8, arguments or `ret` from 16 in 8-byte slots), which
/// the syscall fallback programs rely on.
pub fn check_syscall_layout(category: &str, name: &str) -> Result<()> {
    if category != "syscalls" {
        return Ok(());
    }
    let fields = tracepoint_fields(category, name)?;
    let ok = fields
        .iter()
        .filter(|f| !f.name.starts_with("common_") && f.name != "__syscall_nr")
        .enumerate()
        .all(|(i, f)| f.offset as usize == 16 + 8 * i && f.size == 8);
    if ok {
        Ok(())
    } else {
        Err(Error::KernelFeature {
            feature: format!("tracepoint {category}:{name}"),
            reason: "its record layout differs from the syscall layout the programs expect".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: a multi-byte character before the name made the parser
    /// slice inside it.
    #[test]
    fn a_multibyte_character_before_the_name() {
        let f = parse_format("\tfield:int\u{20ac}x;\toffset:8;\tsize:4;\tsigned:1;\n");
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].name.as_str(), f[0].ctype.as_str()), ("x", "int\u{20ac}"));
    }

    const SOCK: &str = "name: inet_sock_set_state\nID: 2287\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;\n\
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;\n\
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;\n\
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;\n\
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n\
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;\n\
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;\n\n\
print fmt: \"family=%s\"\n";

    #[test]
    fn parses_fields_and_types() {
        let f = parse_format(SOCK);
        assert_eq!(f.len(), 13);
        assert_eq!(
            f[2],
            Field { ctype: "const void *".into(), name: "skaddr".into(), offset: 8, size: 8, signed: false }
        );
        assert_eq!(f[9].ctype, "__u8[4]");
        assert_eq!(f[9].name, "saddr");
        assert!(f[3].signed);
        let l = sock_state_layout(&f);
        assert_eq!((l.valid, l.newstate, l.daddr_v6), (1, 20, 56));
    }

    #[test]
    fn string_pointers_and_data_loc() {
        let f = parse_format(
            "\tfield:const char * pathname;\toffset:24;\tsize:8;\tsigned:0;\n\
             \tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n",
        );
        assert!(f[0].is_string_pointer() && !f[0].is_data_loc());
        assert!(f[1].is_data_loc() && f[1].name == "filename");
    }

    #[test]
    fn missing_fields_make_the_layout_unknown() {
        assert_eq!(sock_state_layout(&parse_format("")).valid, 0);
    }
}

/// Fuzzing: any text parses to some fields or none, never a panic.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn format_lines(decl in "[a-z_ \\[\\]0-9*€é]{0,24}", offset in "-?[0-9]{0,6}", size in "[0-9a-z]{0,4}") {
            let _ = parse_format(&format!("\tfield:{decl};\toffset:{offset};\tsize:{size};\tsigned:1;\n"));
        }

        #[test]
        fn any_text(text in "\\PC{0,200}") {
            let _ = parse_format(&text);
        }
    }
}
