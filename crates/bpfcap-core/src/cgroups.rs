//! cgroup v2: where it is mounted, cgroup ids <-> paths, and what a path says
//! about containers and Kubernetes pods (Docker, containerd, CRI-O, Podman;
//! cgroupfs and systemd naming).

use std::{
    fs,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// The cgroup v2 mount point: `/sys/fs/cgroup` (unified) or
/// `/sys/fs/cgroup/unified` (hybrid layout, as on these machines).
pub fn v2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").is_file())
}

/// A cgroup v2 path (absolute, from the v2 root, e.g. `/libpod_parent/libpod-abc`)
/// resolved to `(id, level)`: the id `bpf_get_current_cgroup_id()` returns
/// (the directory's inode) and its depth (the root is level 0).
pub fn resolve_path(path: &str) -> Result<(u64, u32)> {
    let root = v2_root().ok_or_else(|| Error::KernelFeature {
        feature: "cgroup v2".into(),
        reason: "no cgroup2 hierarchy mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified".into(),
    })?;
    let rel = path.trim_start_matches('/');
    let dir = root.join(rel);
    let meta = fs::metadata(&dir).map_err(|e| Error::Config {
        field: "cgroupPaths",
        value: path.into(),
        allowed: format!("an existing cgroup v2 path under {} ({e})", root.display()),
    })?;
    if !meta.is_dir() {
        return Err(Error::Config {
            field: "cgroupPaths",
            value: path.into(),
            allowed: format!("a cgroup directory under {}", root.display()),
        });
    }
    let level = rel.split('/').filter(|c| !c.is_empty()).count() as u32;
    Ok((meta.ino(), level))
}

/// The path (from the v2 root) of cgroup `id`, through `open_by_handle_at`
/// on the cgroup2 mount (kernfs file handles carry the id). Needs
/// CAP_DAC_READ_SEARCH; `None` when the cgroup is gone or it is refused.
pub fn path_of_id(id: u64) -> Option<String> {
    let root = v2_root()?;
    if id == 1 {
        return Some("/".into()); // the root cgroup's id
    }
    let mount = fs::File::open(&root).ok()?;
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[8]; }
    #[repr(C)]
    struct Handle {
        bytes: u32,
        ty: i32,
        id: u64,
    }
    const FILEID_KERNFS: i32 = 0xfe;
    let mut h = Handle { bytes: 8, ty: FILEID_KERNFS, id };
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            &mut h as *mut Handle,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    } as i32;
    if fd < 0 {
        return None;
    }
    let link = fs::read_link(format!("/proc/self/fd/{fd}"));
    unsafe { libc::close(fd) };
    let abs = link.ok()?;
    let rel = abs.strip_prefix(&root).ok()?;
    Some(format!("/{}", rel.display()))
}

/// What a cgroup path says about the container and pod it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    pub path: String,
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `crio`, `podman`.
    pub runtime: Option<&'static str>,
    pub pod_uid: Option<String>,
    /// `guaranteed`, `burstable`, `besteffort` for Kubernetes pods.
    pub qos: Option<&'static str>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses container and pod from a cgroup path, e.g.
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-<id>.scope`,
/// `/kubepods/besteffort/pod<uid>/<id>`, `/docker/<id>`, `/system.slice/docker-<id>.scope`,
/// `/machine.slice/libpod-<id>.scope`, `/libpod_parent/libpod-<id>`, `/crio-<id>.scope`.
pub fn parse_path(path: &str) -> CgroupInfo {
    let mut info = CgroupInfo { path: path.to_owned(), ..CgroupInfo::default() };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let name = part.strip_suffix(".scope").unwrap_or(part);
        for (prefix, runtime) in
            [("docker-", "docker"), ("cri-containerd-", "containerd"), ("crio-", "crio"), ("libpod-", "podman")]
        {
            if let Some(id) = name.strip_prefix(prefix) {
                if is_hex64(id) {
                    info.container_id = Some(id.to_owned());
                    info.runtime = Some(runtime);
                }
            }
        }
        // cgroupfs style: the bare id under /docker/ or a kubepods pod directory.
        if is_hex64(name) && info.container_id.is_none() {
            info.container_id = Some(name.to_owned());
            info.runtime = match parts.get(i.wrapping_sub(1)) {
                Some(&"docker") => Some("docker"),
                _ => None,
            };
        }
        // Kubernetes: pod<uid> (cgroupfs) or kubepods[-qos]-pod<uid_with_underscores>.slice (systemd).
        let slice = part.strip_suffix(".slice").unwrap_or(part);
        if let Some(pos) = slice.rfind("pod") {
            let uid = &slice[pos + 3..];
            let prefix = &slice[..pos];
            let k8s = prefix.is_empty() || prefix.starts_with("kubepods");
            if k8s && uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_') {
                info.pod_uid = Some(uid.replace('_', "-"));
            }
        }
        // QoS: kubepods-besteffort.slice (systemd) or kubepods/besteffort (cgroupfs).
        if parts.first().is_some_and(|p| p.starts_with("kubepods")) {
            if part.contains("besteffort") {
                info.qos = Some("besteffort");
            } else if part.contains("burstable") {
                info.qos = Some("burstable");
            }
        }
    }
    if info.pod_uid.is_some() && info.qos.is_none() {
        info.qos = Some("guaranteed");
    }
    info
}

/// cgroup directories (v2) whose name holds `container_id` (full, or a prefix
/// of at least 12 hex digits), as `(path, id, level)`.
pub fn find_container(container_id: &str) -> Vec<(String, u64, u32)> {
    let Some(root) = v2_root() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&root, &root, 0, &mut |path, dir_name, level, ino| {
        let name = dir_name.strip_suffix(".scope").unwrap_or(dir_name);
        let id = name.rsplit('-').next().unwrap_or(name);
        if id.starts_with(container_id) && is_hex64(id) {
            out.push((path.to_owned(), ino, level));
        }
    });
    out
}

/// Whether `s` is a valid container id to filter on: 12 to 64 hex digits.
pub fn valid_container_id(s: &str) -> bool {
    (12..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn walk(root: &Path, dir: &Path, level: u32, f: &mut dyn FnMut(&str, &str, u32, u64)) {
    if level > 16 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_dir() {
            continue;
        }
        let path = e.path();
        let rel = format!("/{}", path.strip_prefix(root).unwrap_or(&path).display());
        f(&rel, &e.file_name().to_string_lossy(), level + 1, meta.ino());
        walk(root, &path, level + 1, f);
    }
}

/// Descendants of `pid` running now (children, grandchildren, ...), from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // The comm field may hold spaces and parentheses: parse after the last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|v| v.parse::<u32>().ok()) {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(cur) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == cur && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_runtimes_in_both_styles() {
        for (path, runtime) in [
            (format!("/docker/{ID}"), Some("docker")),
            (format!("/system.slice/docker-{ID}.scope"), Some("docker")),
            (format!("/system.slice/crio-{ID}.scope"), Some("crio")),
            (format!("/libpod_parent/libpod-{ID}"), Some("podman")),
            (format!("/machine.slice/libpod-{ID}.scope"), Some("podman")),
        ] {
            let info = parse_path(&path);
            assert_eq!(info.container_id.as_deref(), Some(ID), "{path}");
            assert_eq!(info.runtime, runtime, "{path}");
            assert_eq!(info.pod_uid, None);
        }
    }

    #[test]
    fn kubelet_paths_give_pod_uid_and_qos() {
        let uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        let sys = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            uid.replace('-', "_")
        );
        let info = parse_path(&sys);
        assert_eq!(
            (info.pod_uid.as_deref(), info.qos, info.runtime),
            (Some(uid), Some("burstable"), Some("containerd"))
        );
        assert_eq!(info.container_id.as_deref(), Some(ID));
        let fs = format!("/kubepods/besteffort/pod{uid}/{ID}");
        let info = parse_path(&fs);
        assert_eq!((info.pod_uid.as_deref(), info.qos), (Some(uid), Some("besteffort")));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        let guaranteed = format!("/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope", uid.replace('-', "_"));
        assert_eq!(parse_path(&guaranteed).qos, Some("guaranteed"));
    }

    #[test]
    fn host_paths_have_no_container() {
        for p in [
            "/",
            "/system.slice/sshd.service",
            "/user.slice/user-0.slice",
            "/process_api/bd885629f4e9094339268f94384fbd26",
        ] {
            let info = parse_path(p);
            assert_eq!((info.container_id, info.pod_uid, info.qos), (None, None, None), "{p}");
        }
    }

    #[test]
    fn container_id_validation() {
        assert!(valid_container_id(ID) && valid_container_id(&ID[..12]));
        assert!(
            !valid_container_id("abc") && !valid_container_id("xyz456789012") && !valid_container_id(&format!("{ID}0"))
        );
    }
}
