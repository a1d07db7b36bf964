//! Network events: TCP connect and close, UDP sends. The same record comes
//! from a kprobe, an fentry program, or the nearest tracepoints.

use aya_ebpf::{
    macros::{fentry, kprobe, map, tracepoint},
    maps::{HashMap, LruHashMap},
    programs::{FEntryContext, ProbeContext, TracePointContext},
};
use bpfcap_common::{flag, kind, NetRecord, SockStateLayout};

use crate::common::{
    admit, admit_type, emit, enabled, file_of_fd, fill_header, off, output, peek, read_kernel, syscall_arg, SETTINGS,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;
const SOCK_DGRAM: u16 = 2;

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;
const TCP_LAST_ACK: i32 = 9;
const TCP_LISTEN: i32 = 10;

/// Fills family, addresses and ports from a `struct sock *`.
#[inline(always)]
fn from_sock(rec: &mut NetRecord, sk: u64) -> bool {
    let Some(family) = read_kernel::<u16>(sk, off!(sk_family)) else { return false };
    rec.family = family;
    rec.sport = peek::<u16>(sk, off!(sk_num));
    rec.dport = u16::from_be(peek::<u16>(sk, off!(sk_dport)));
    match family {
        AF_INET => {
            let s = peek::<[u8; 4]>(sk, off!(sk_rcv_saddr));
            let d = peek::<[u8; 4]>(sk, off!(sk_daddr));
            rec.saddr[..4].copy_from_slice(&s);
            rec.daddr[..4].copy_from_slice(&d);
        }
        AF_INET6 => {
            rec.saddr = peek::<[u8; 16]>(sk, off!(sk_v6_rcv_saddr));
            rec.daddr = peek::<[u8; 16]>(sk, off!(sk_v6_daddr));
        }
        _ => return false,
    }
    true
}

/// A connect's addresses and ports, by socket, from the connect to the close
/// (kprobe, fentry): a reset socket loses its source port, and a connect
/// that fails is disconnected, which clears its destination, before the
/// process closes it.
#[map(name = "BPFCAP_PEERS")]
static PEERS: LruHashMap<u64, Peer> = LruHashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct Peer {
    family: u16,
    sport: u16,
    dport: u16,
    _pad: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

#[inline(always)]
fn emit_sock(kind: u16, sk: u64) {
    let mut flags = 0;
    let mut peer = None;
    if kind == kind::TCP_CLOSE {
        let state = peek::<u8>(sk, off!(sk_state)) as i32;
        // A listening socket's close ends no connection: not a `tcp_close`.
        if state == TCP_LISTEN {
            return;
        }
        peer = unsafe { PEERS.get(&sk) }.copied();
        if peer.is_some() {
            let _ = PEERS.remove(&sk);
        }
        // Never connected: still connecting, or reset before its SYN was
        // acknowledged (`bytes_acked` counts the SYN's one byte).
        if state == TCP_SYN_SENT || (state == TCP_CLOSE && read_kernel::<u64>(sk, off!(tcp_bytes_acked)) == Some(0)) {
            flags = flag::NOT_CONNECTED;
        }
    }
    let admitted = admit(kind);
    if kind == kind::TCP_CONNECT && enabled(kind::TCP_CLOSE) {
        let mut rec = NetRecord::default();
        from_sock(&mut rec, sk);
        let (family, sport, dport, saddr, daddr) = (rec.family, rec.sport, rec.dport, rec.saddr, rec.daddr);
        let _ = PEERS.insert(&sk, &Peer { family, sport, dport, _pad: 0, saddr, daddr }, 0);
    }
    if !admitted {
        return;
    }
    emit::<NetRecord>(kind, |rec| {
        *rec = NetRecord { hdr: rec.hdr, ..NetRecord::default() };
        rec.hdr.flags |= flags;
        from_sock(rec, sk);
        if let Some(p) = peer.filter(|_| rec.sport == 0 || rec.dport == 0) {
            (rec.family, rec.sport, rec.dport, rec.saddr, rec.daddr) = (p.family, p.sport, p.dport, p.saddr, p.daddr);
        }
    });
}

// -- tcp_connect(struct sock *sk) / tcp_close(struct sock *sk, long timeout) ------------

#[kprobe]
pub fn bpfcap_tcpc_kp(ctx: ProbeContext) -> u32 {
    emit_sock(kind::TCP_CONNECT, ctx.arg(0).unwrap_or(0));
    0
}

#[fentry(function = "tcp_connect")]
pub fn bpfcap_tcpc_fe(ctx: FEntryContext) -> u32 {
    emit_sock(kind::TCP_CONNECT, ctx.arg(0));
    0
}

#[kprobe]
pub fn bpfcap_tcpx_kp(ctx: ProbeContext) -> u32 {
    emit_sock(kind::TCP_CLOSE, ctx.arg(0).unwrap_or(0));
    0
}

#[fentry(function = "tcp_close")]
pub fn bpfcap_tcpx_fe(ctx: FEntryContext) -> u32 {
    emit_sock(kind::TCP_CLOSE, ctx.arg(0));
    0
}

/// Connects seen at CLOSE -> SYN_SENT, by socket, until the next transition:
/// the source port is chosen only after SYN_SENT is set.
#[map(name = "BPFCAP_CONNECTING")]
static CONNECTING: HashMap<u64, NetRecord> = HashMap::with_max_entries(8192, 0);

/// `sock:inet_sock_set_state`. A connect is CLOSE -> SYN_SENT, sent once the
/// socket leaves SYN_SENT (its source port known by then) with the connecting
/// task's header. A close by the process is ESTABLISHED -> FIN_WAIT1,
/// CLOSE_WAIT -> LAST_ACK, or an abort to CLOSE from SYN_SENT, ESTABLISHED
/// or CLOSE_WAIT (LISTEN -> CLOSE ends no connection). Later transitions in softirq context
/// (TIME_WAIT -> CLOSE, ...) are not reported: they belong to no process.
#[tracepoint]
pub fn bpfcap_sockst(ctx: TracePointContext) -> u32 {
    let l = unsafe { core::ptr::read_volatile(&SETTINGS.tp_sock) };
    if l.valid == 0 {
        return 0;
    }
    if read16(&ctx, l.protocol) != IPPROTO_TCP {
        return 0;
    }
    let sk = unsafe { ctx.read_at::<u64>(8) }.unwrap_or(0);
    let old = unsafe { ctx.read_at::<i32>(l.oldstate as usize) }.unwrap_or(0);
    let new = unsafe { ctx.read_at::<i32>(l.newstate as usize) }.unwrap_or(0);
    if old == TCP_SYN_SENT {
        if let Some(pending) = CONNECTING.get_ptr_mut(&sk) {
            let rec = unsafe { &mut *pending };
            from_sock_state(rec, &ctx, &l);
            output(kind::TCP_CONNECT, (rec as *mut NetRecord).cast(), core::mem::size_of::<NetRecord>());
            // A connect that failed (refused, timed out): its close is the
            // connecting task's, wherever the reset was handled.
            if new == TCP_CLOSE && admit_type(kind::TCP_CLOSE) {
                rec.hdr.kind = kind::TCP_CLOSE;
                rec.hdr.flags |= flag::NOT_CONNECTED;
                output(kind::TCP_CLOSE, (rec as *mut NetRecord).cast(), core::mem::size_of::<NetRecord>());
            }
            let _ = CONNECTING.remove(&sk);
            if new == TCP_CLOSE {
                return 0;
            }
        }
    }
    let kind = match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => {
            if admit(kind::TCP_CONNECT) {
                let mut rec = NetRecord::default();
                fill_header(&mut rec.hdr, kind::TCP_CONNECT);
                rec.hdr.size = core::mem::size_of::<NetRecord>() as u32;
                let _ = CONNECTING.insert(&sk, &rec, 0);
            }
            return 0;
        }
        (TCP_ESTABLISHED, TCP_FIN_WAIT1) | (TCP_CLOSE_WAIT, TCP_LAST_ACK) => kind::TCP_CLOSE,
        (TCP_SYN_SENT | TCP_ESTABLISHED | TCP_CLOSE_WAIT, TCP_CLOSE) => kind::TCP_CLOSE,
        _ => return 0,
    };
    if !admit(kind) {
        return 0;
    }
    emit::<NetRecord>(kind, |rec| {
        *rec = NetRecord { hdr: rec.hdr, ..NetRecord::default() };
        if old == TCP_SYN_SENT {
            rec.hdr.flags |= flag::NOT_CONNECTED;
        }
        from_sock_state(rec, &ctx, &l);
    });
    0
}

#[inline(always)]
fn read16(ctx: &TracePointContext, off: u16) -> u16 {
    unsafe { ctx.read_at::<u16>(off as usize) }.unwrap_or(0)
}

/// Family, addresses and ports from an `inet_sock_set_state` record.
#[inline(always)]
fn from_sock_state(rec: &mut NetRecord, ctx: &TracePointContext, l: &SockStateLayout) {
    rec.family = read16(ctx, l.family);
    rec.sport = read16(ctx, l.sport);
    rec.dport = read16(ctx, l.dport);
    if rec.family == AF_INET6 {
        rec.saddr = unsafe { ctx.read_at::<[u8; 16]>(l.saddr_v6 as usize) }.unwrap_or([0; 16]);
        rec.daddr = unsafe { ctx.read_at::<[u8; 16]>(l.daddr_v6 as usize) }.unwrap_or([0; 16]);
    } else {
        let s = unsafe { ctx.read_at::<[u8; 4]>(l.saddr as usize) }.unwrap_or([0; 4]);
        let d = unsafe { ctx.read_at::<[u8; 4]>(l.daddr as usize) }.unwrap_or([0; 4]);
        rec.saddr[..4].copy_from_slice(&s);
        rec.daddr[..4].copy_from_slice(&d);
    }
}

// -- udp_sendmsg / udpv6_sendmsg(struct sock *sk, struct msghdr *msg, size_t len) -----

/// Destination from `msg->msg_name` (sendto) or else the connected peer.
#[inline(always)]
fn emit_udp(sk: u64, msg: u64, len: u64) {
    if !admit(kind::UDP_SEND) {
        return;
    }
    let name = peek::<u64>(msg, off!(msghdr_name));
    emit::<NetRecord>(kind::UDP_SEND, |rec| {
        *rec = NetRecord { hdr: rec.hdr, ..NetRecord::default() };
        from_sock(rec, sk);
        rec.hdr.flags |= flag::NO_SOURCE;
        rec.bytes = len as i64;
        if name != 0 {
            // msg_name is a kernel copy of the sockaddr here.
            sockaddr_dest(rec, name, false);
        }
    });
}

/// Destination family, address and port from a `struct sockaddr_in{,6}`.
#[inline(always)]
fn sockaddr_dest(rec: &mut NetRecord, addr: u64, user: bool) {
    let read = |o: u64, dst: &mut [u8]| unsafe {
        let f = if user {
            aya_ebpf::helpers::generated::bpf_probe_read_user
        } else {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel
        };
        f(dst.as_mut_ptr().cast(), dst.len() as u32, (addr + o) as *const _)
    };
    let mut fam = [0u8; 2];
    let mut port = [0u8; 2];
    if read(0, &mut fam) != 0 || read(2, &mut port) != 0 {
        return;
    }
    let family = u16::from_ne_bytes(fam);
    rec.family = family;
    rec.dport = u16::from_be_bytes(port);
    rec.daddr = [0; 16];
    if family == AF_INET {
        read(4, &mut rec.daddr[..4]);
    } else if family == AF_INET6 {
        read(8, &mut rec.daddr);
    }
}

#[kprobe]
pub fn bpfcap_udp_kp(ctx: ProbeContext) -> u32 {
    emit_udp(ctx.arg(0).unwrap_or(0), ctx.arg(1).unwrap_or(0), ctx.arg(2).unwrap_or(0));
    0
}

#[fentry(function = "udp_sendmsg")]
pub fn bpfcap_udp_fe(ctx: FEntryContext) -> u32 {
    emit_udp(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

#[fentry(function = "udpv6_sendmsg")]
pub fn bpfcap_udp6_fe(ctx: FEntryContext) -> u32 {
    emit_udp(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

/// The UDP socket behind `fd`, or 0 when it is something else.
#[inline(always)]
fn udp_sock_of_fd(fd: i64) -> u64 {
    udp_sock_of_file(file_of_fd(fd))
}

/// The UDP socket of an open file, or 0. A socket's file points to its
/// `struct socket`, whose `sk` points back to it: other files' private data
/// (mostly null) fails that test.
#[inline(always)]
fn udp_sock_of_file(file: u64) -> u64 {
    let socket = peek::<u64>(file, off!(file_private));
    if socket == 0 {
        return 0;
    }
    let sk = peek::<u64>(socket, off!(socket_sk));
    if sk == 0 || peek::<u64>(sk, off!(sk_socket)) != socket {
        return 0;
    }
    let proto = peek::<u16>(sk, off!(sk_protocol));
    let ty = peek::<u16>(sk, off!(sk_type));
    if proto == IPPROTO_UDP && ty == SOCK_DGRAM {
        sk
    } else {
        0
    }
}

/// How a write syscall gives its byte count.
pub enum UdpWrite {
    /// `write(fd, buf, count)`
    Count,
    /// `writev(fd, iov, iovcnt)`
    Iovecs,
}

/// A write(2) or writev(2) on a (connected) UDP socket is a send to its
/// peer: kprobe and fentry see it in udp_sendmsg, the tracepoint plan here.
/// `file`: the fd's file if the caller looked it up already.
#[inline(always)]
pub fn udp_write(ctx: &TracePointContext, file: u64, how: UdpWrite) {
    // (the types' filter first: it costs no kernel read)
    if !admit_type(kind::UDP_SEND) {
        return;
    }
    let file = if file != 0 { file } else { file_of_fd(syscall_arg(ctx, 0) as i64) };
    let sk = udp_sock_of_file(file);
    if sk == 0 || !admit(kind::UDP_SEND) {
        return;
    }
    let bytes = match how {
        UdpWrite::Count => syscall_arg(ctx, 2) as i64,
        UdpWrite::Iovecs => iov_bytes(syscall_arg(ctx, 1), syscall_arg(ctx, 2)),
    };
    emit::<NetRecord>(kind::UDP_SEND, |rec| {
        *rec = NetRecord { hdr: rec.hdr, ..NetRecord::default() };
        from_sock(rec, sk);
        rec.hdr.flags |= flag::NO_SOURCE;
        rec.bytes = bytes;
    });
}

/// The sum of the lengths of `n` user iovecs (all of them: at most `UIO_MAXIOV`).
#[inline(always)]
fn iov_bytes(iov: u64, n: u64) -> i64 {
    let mut bytes: i64 = 0;
    for i in 0..UIO_MAXIOV {
        if i >= n {
            break;
        }
        // struct iovec { void *base; size_t len; }
        bytes += unsafe { aya_ebpf::helpers::bpf_probe_read_user((iov + i * 16 + 8) as *const i64) }.unwrap_or(0);
    }
    bytes
}

/// `syscalls:sys_enter_sendto(fd, buff, len, flags, addr, addr_len)`.
#[tracepoint]
pub fn bpfcap_sendto(ctx: TracePointContext) -> u32 {
    let sk = udp_sock_of_fd(syscall_arg(&ctx, 0) as i64);
    if sk == 0 || !admit(kind::UDP_SEND) {
        return 0;
    }
    let (len, addr) = (syscall_arg(&ctx, 2), syscall_arg(&ctx, 4));
    emit::<NetRecord>(kind::UDP_SEND, |rec| {
        *rec = NetRecord { hdr: rec.hdr, ..NetRecord::default() };
        from_sock(rec, sk);
        rec.hdr.flags |= flag::NO_SOURCE;
        rec.bytes = len as i64;
        if addr != 0 {
            sockaddr_dest(rec, addr, true);
        }
    });
    0
}

/// The most iovecs a sendmsg(2) takes.
const UIO_MAXIOV: u64 = 1024;

/// `syscalls:sys_enter_sendmsg(fd, msg, flags)`: destination from the user's
/// msghdr; bytes are the sum of its iovecs' lengths (all of them: at most
/// `UIO_MAXIOV`).
#[tracepoint]
pub fn bpfcap_sendmsg(ctx: TracePointContext) -> u32 {
    let sk = udp_sock_of_fd(syscall_arg(&ctx, 0) as i64);
    let msg = syscall_arg(&ctx, 1);
    if sk == 0 || msg == 0 || !admit(kind::UDP_SEND) {
        return 0;
    }
    // struct user_msghdr (UAPI): name @0, namelen @8, iov @16, iovlen @24.
    let user = |o: u64| unsafe { aya_ebpf::helpers::bpf_probe_read_user((msg + o) as *const u64) }.unwrap_or(0);
    let (name, iov, iovlen) = (user(0), user(16), user(24));
    let bytes = iov_bytes(iov, iovlen);
    emit::<NetRecord>(kind::UDP_SEND, |rec| {
        *rec = NetRecord { hdr: rec.hdr, ..NetRecord::default() };
        from_sock(rec, sk);
        rec.hdr.flags |= flag::NO_SOURCE;
        rec.bytes = bytes;
        if name != 0 {
            sockaddr_dest(rec, name, true);
        }
    });
    0
}

/// A sendmmsg(2)'s socket and messages, from its entry to its exit, by thread.
#[map(name = "BPFCAP_SENDING")]
static SENDING: LruHashMap<u32, Sending> = LruHashMap::with_max_entries(4096, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct Sending {
    sk: u64,
    msgs: u64,
}

/// `syscalls:sys_enter_sendmmsg(fd, mmsg, vlen, flags)` (glibc's resolver
/// sends its A and AAAA queries with one).
#[tracepoint]
pub fn bpfcap_sendmmsg_etp(ctx: TracePointContext) -> u32 {
    if !enabled(kind::UDP_SEND) {
        return 0;
    }
    let sk = udp_sock_of_fd(syscall_arg(&ctx, 0) as i64);
    let msgs = syscall_arg(&ctx, 1);
    if sk != 0 && msgs != 0 {
        let tid = unsafe { aya_ebpf::helpers::bpf_get_current_pid_tgid() } as u32;
        let _ = SENDING.insert(&tid, &Sending { sk, msgs }, 0);
    }
    0
}

/// The first `MMSG_EACH - 1` messages of a sendmmsg(2) are a `udp_send` each,
/// the rest one more with the sum of their bytes (to the first one's
/// destination): the verifier takes no more events in one run.
const MMSG_EACH: u64 = 8;

/// `syscalls:sys_exit_sendmmsg`: one `udp_send` per message sent (the
/// return value), with the bytes the kernel wrote to its `msg_len`.
#[tracepoint]
pub fn bpfcap_sendmmsg_xtp(ctx: TracePointContext) -> u32 {
    let tid = unsafe { aya_ebpf::helpers::bpf_get_current_pid_tgid() } as u32;
    let Some(s) = (unsafe { SENDING.get(&tid) }).copied() else { return 0 };
    let _ = SENDING.remove(&tid);
    let sent = (syscall_arg(&ctx, 0) as i64).clamp(0, UIO_MAXIOV as i64) as u64;
    // struct mmsghdr { struct user_msghdr msg_hdr (name @0); unsigned msg_len @56; } (64 bytes)
    let msg_len = |i: u64| {
        unsafe { aya_ebpf::helpers::bpf_probe_read_user((s.msgs + i * 64 + 56) as *const u32) }.unwrap_or(0) as i64
    };
    for i in 0..MMSG_EACH {
        if i >= sent {
            return 0;
        }
        let bytes = if i + 1 < MMSG_EACH {
            msg_len(i)
        } else {
            let mut rest = 0;
            for j in MMSG_EACH - 1..UIO_MAXIOV {
                if j >= sent {
                    break;
                }
                rest += msg_len(j);
            }
            rest
        };
        if admit(kind::UDP_SEND) {
            let name = unsafe { aya_ebpf::helpers::bpf_probe_read_user((s.msgs + i * 64) as *const u64) }.unwrap_or(0);
            emit::<NetRecord>(kind::UDP_SEND, |rec| {
                *rec = NetRecord { hdr: rec.hdr, ..NetRecord::default() };
                from_sock(rec, s.sk);
                rec.hdr.flags |= flag::NO_SOURCE;
                rec.bytes = bytes;
                if name != 0 {
                    sockaddr_dest(rec, name, true);
                }
            });
        }
    }
    0
}
