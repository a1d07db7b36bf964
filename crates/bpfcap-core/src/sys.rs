//! What the running system offers: privileges, kernel version, BTF, lockdown.
//! Everything here reads files under /proc and /sys; nothing needs root.

use std::fs;

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Effective capability bits of this process (`CapEff` in /proc/self/status).
pub fn effective_caps() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

pub fn has_cap(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// What loading tracing programs with a ring buffer lacks, or `None` when the
/// process may do it: CAP_BPF and CAP_PERFMON (5.8+), or CAP_SYS_ADMIN.
pub fn missing_tracing_caps(caps: u64) -> Option<&'static str> {
    if has_cap(caps, CAP_SYS_ADMIN) {
        return None;
    }
    match (has_cap(caps, CAP_BPF), has_cap(caps, CAP_PERFMON)) {
        (true, true) => None,
        (true, false) => Some("CAP_PERFMON"),
        (false, true) => Some("CAP_BPF"),
        (false, false) => Some("CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"),
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// (major, minor, patch) from a release string such as `6.1.0-27-amd64`.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32, u32)> {
    let mut nums = release.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    let major = nums.next()?.parse().ok()?;
    let minor = nums.next()?.parse().ok()?;
    let patch = nums.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// Kernels before 5.11 charge BPF maps and programs to RLIMIT_MEMLOCK (64 KiB
/// by default), not to the memory cgroup. Raises it as libbpf does: to
/// unlimited where allowed (CAP_SYS_RESOURCE), else the soft limit to the hard
/// one. Returns the limit still in force, in bytes, if there is one that charges.
pub fn raise_memlock_if_charged() -> Option<u64> {
    if parse_kernel_version(&kernel_release()).is_none_or(|v| v >= (5, 11, 0)) {
        return None;
    }
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe {
        let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) == 0 {
            return None;
        }
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &r);
    }
    (r.rlim_max != libc::RLIM_INFINITY).then_some(r.rlim_max)
}

pub fn btf_available() -> bool {
    fs::metadata("/sys/kernel/btf/vmlinux").is_ok()
}

/// Mounts securityfs on /sys/kernel/security if it is not (needs
/// CAP_SYS_ADMIN); lockdown and LSM state are read from there. Best effort.
pub fn ensure_securityfs() {
    const DIR: &str = "/sys/kernel/security";
    if fs::metadata(format!("{DIR}/lsm")).is_ok() {
        return;
    }
    let (src, dir) = (c"securityfs", c"/sys/kernel/security");
    unsafe { libc::mount(src.as_ptr(), dir.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
}

/// The active lockdown mode (`none`, `integrity`, `confidentiality`), if the
/// lockdown LSM is present and securityfs is mounted.
pub fn lockdown_mode() -> Option<String> {
    let text = fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    let start = text.find('[')? + 1;
    let end = text[start..].find(']')? + start;
    Some(text[start..end].to_owned())
}

/// Active LSMs, e.g. `lockdown,capability,landlock,bpf`.
pub fn active_lsms() -> Option<String> {
    fs::read_to_string("/sys/kernel/security/lsm").ok().map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.1.0-27-amd64"), Some((6, 1, 0)));
        assert_eq!(parse_kernel_version("5.10.0-32-amd64"), Some((5, 10, 0)));
        assert_eq!(parse_kernel_version("6.18.44-fc-v669"), Some((6, 18, 44)));
        assert_eq!(parse_kernel_version("6.12"), Some((6, 12, 0)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }

    #[test]
    fn capability_requirements() {
        assert_eq!(missing_tracing_caps(0), Some("CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"));
        assert_eq!(missing_tracing_caps(1 << CAP_SYS_ADMIN), None);
        assert_eq!(missing_tracing_caps(1 << CAP_BPF | 1 << CAP_PERFMON), None);
        assert_eq!(missing_tracing_caps(1 << CAP_BPF), Some("CAP_PERFMON"));
    }
}
