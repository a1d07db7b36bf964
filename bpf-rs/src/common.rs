//! Maps, load-time globals and helpers every program uses.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated as h,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext,
};
use bpfcap_common::{
    comm_match, drop_reason, filter_field, kind, FilterConfig, GenCgroup, GenComm, GenId, Header, Offsets, RateState,
    Settings, Track, COMM_LEN, MAX_FILTER_IDS, MAX_TRACKED, NO_OFFSET,
};

/// The rings the programs write to: one shared ring, or one per group of
/// CPUs (CPU c writes to ring c % rings) so that many producing CPUs do not
/// contend on one ring's lock. Userspace sizes them before load (unused ones
/// to a page).
#[map(name = "BPFCAP_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map(name = "BPFCAP_EVENTS1")]
static EVENTS1: RingBuf = RingBuf::with_byte_size(1 << 12, 0);
#[map(name = "BPFCAP_EVENTS2")]
static EVENTS2: RingBuf = RingBuf::with_byte_size(1 << 12, 0);
#[map(name = "BPFCAP_EVENTS3")]
static EVENTS3: RingBuf = RingBuf::with_byte_size(1 << 12, 0);

/// Records that did not fit into the ring, per CPU and per kind.
#[map(name = "BPFCAP_LOST")]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// Which event kinds userspace wants (1) or not (0). Programs shared by
/// several kinds (a syscall tracepoint serving reads and permission checks)
/// look here before building a record.
#[map(name = "BPFCAP_ENABLED")]
pub static ENABLED: Array<u32> = Array::with_max_entries(kind::COUNT, 0);

/// The filter generation in force (0 or 1), see `FilterConfig`.
#[map(name = "BPFCAP_FILTER_GEN")]
pub static FILTER_GEN: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "BPFCAP_FILTERS")]
pub static FILTERS: Array<FilterConfig> = Array::with_max_entries(2, 0);

#[map(name = "BPFCAP_F_PIDS")]
pub static FILTER_PIDS: HashMap<GenId, u8> = HashMap::with_max_entries(2 * MAX_FILTER_IDS, 0);

#[map(name = "BPFCAP_F_UIDS")]
pub static FILTER_UIDS: HashMap<GenId, u8> = HashMap::with_max_entries(2 * MAX_FILTER_IDS, 0);

#[map(name = "BPFCAP_F_COMMS")]
pub static FILTER_COMMS: HashMap<GenComm, u8> = HashMap::with_max_entries(2 * MAX_FILTER_IDS, 0);

#[map(name = "BPFCAP_F_CGROUPS")]
pub static FILTER_CGROUPS: HashMap<GenCgroup, u8> = HashMap::with_max_entries(2 * MAX_FILTER_IDS, 0);

/// Processes of followed trees and labelled sessions, by tgid.
#[map(name = "BPFCAP_TRACKED")]
pub static TRACKED: HashMap<u32, Track> = HashMap::with_max_entries(MAX_TRACKED, 0);

/// Events dropped before the ring, per CPU, by `drop_reason` and kind.
#[map(name = "BPFCAP_DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_reason::COUNT * kind::COUNT, 0);

#[map(name = "BPFCAP_RATE")]
pub static RATE: Array<RateState> = Array::with_max_entries(1, 0);

/// The last pid-filter decision on this CPU: a syscall-heavy process that the
/// filter rejects is looked up in the hash maps once, not on every event.
#[map(name = "BPFCAP_PID_CACHE")]
static PID_CACHE: PerCpuArray<PidDecision> = PerCpuArray::with_max_entries(1, 0);

/// Process exits so far: cached task facts (the parent may have changed) are
/// valid only while no process has exited since.
#[map(name = "BPFCAP_EXITS")]
static EXITS: Array<u64> = Array::with_max_entries(1, 0);

/// Changes of the pid filter's membership in the kernel: a process joined or
/// left a followed tree, or a filter pid (without followChildren) exited. A
/// cached pid decision is valid only while this has not moved, so a reused pid
/// never inherits another process's decision; processes starting and ending
/// elsewhere on the machine leave it (and the cached decisions) alone.
#[map(name = "BPFCAP_MEMBERSHIP")]
static MEMBERSHIP: Array<u64> = Array::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct PidDecision {
    /// The thread (tid and tgid) the decision is for.
    pid_tgid: u64,
    /// The value of `MEMBERSHIP` when it was made.
    membership: u64,
    /// The filter generation counter it was made under.
    gen: u32,
    pass: u32,
}

/// Struct field offsets of the running kernel, from its BTF (set before load).
#[no_mangle]
pub static OFFSETS: Offsets = Offsets::UNKNOWN;

/// Wake-up watermark and other load-time settings.
#[no_mangle]
pub static SETTINGS: Settings = Settings::DEFAULT;

/// Reads one offset from the read-only global; volatile so LLVM cannot fold
/// the placeholder value in (the verifier sees the real, constant one).
macro_rules! off {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&$crate::common::OFFSETS.$field) }
    };
}
pub(crate) use off;

/// Reads a `T` at `base + off` in kernel memory; `None` when the kernel lacks
/// the field or the read fails.
#[inline(always)]
pub fn read_kernel<T: Copy>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == NO_OFFSET {
        return None;
    }
    let mut out = core::mem::MaybeUninit::<T>::uninit();
    let ret = unsafe {
        h::bpf_probe_read_kernel(
            out.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            (base + off as u64) as *const core::ffi::c_void,
        )
    };
    if ret == 0 {
        Some(unsafe { out.assume_init() })
    } else {
        None
    }
}

/// Reads a `T` at `base + off` in kernel memory, zero when that fails, without
/// a branch: the helper zeroes its buffer on failure. Wherever a failed read
/// may simply read as zero, prefer this to `read_kernel`: each `Option` splits
/// the verifier's walk into a known-zero state and an unknown one, which it
/// cannot merge (in loops that multiplies the programs' verification time).
#[inline(always)]
pub fn peek<T: Copy>(base: u64, off: u32) -> T {
    let mut out = core::mem::MaybeUninit::<T>::zeroed();
    if off != NO_OFFSET {
        // (a load-time constant: the verifier folds this test away)
        unsafe {
            h::bpf_probe_read_kernel(
                out.as_mut_ptr().cast(),
                core::mem::size_of::<T>() as u32,
                base.wrapping_add(off as u64) as *const core::ffi::c_void,
            )
        };
    }
    unsafe { core::ptr::read_volatile(out.as_ptr()) }
}

/// The inode number of a namespace reached through `task->nsproxy->{ns_off}`.
#[inline(always)]
fn ns_inum(nsproxy: u64, ns_off: u32, inum_off: u32) -> u32 {
    peek::<u32>(peek::<u64>(nsproxy, ns_off), inum_off)
}

/// Fills the common header for the current task. `size` is set by the caller.
#[inline(always)]
pub fn fill_header(hdr: &mut Header, kind: u16) {
    let pid_tgid = unsafe { h::bpf_get_current_pid_tgid() };
    let uid_gid = unsafe { h::bpf_get_current_uid_gid() };
    let task = unsafe { h::bpf_get_current_task() };
    hdr.kind = kind;
    hdr.flags = 0;
    hdr.ts_ns = unsafe { h::bpf_ktime_get_ns() };
    hdr.cgroup_id = unsafe { h::bpf_get_current_cgroup_id() };
    hdr.pid = (pid_tgid >> 32) as u32;
    hdr.tid = pid_tgid as u32;
    hdr.uid = uid_gid as u32;
    hdr.gid = (uid_gid >> 32) as u32;
    hdr._pad = 0;
    unsafe { h::bpf_get_current_comm(hdr.comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    let now = hdr.ts_ns;
    let (ppid, ns, session) = task_facts(task, (pid_tgid >> 32) as u32, now);
    hdr.ppid = ppid;
    hdr.mnt_ns = ns[0];
    hdr.pid_ns = ns[1];
    hdr.net_ns = ns[2];
    hdr.session = session;
}

/// How long cached facts about a task or a file's path stay valid: bounds
/// how stale they can be after a change nothing here observes (setns, a
/// rename of a directory above an open file).
pub const CACHE_TTL_NS: u64 = 100_000_000;

/// What the header needs that takes pointer chasing: parent, namespaces, session.
#[repr(C)]
#[derive(Clone, Copy)]
struct TaskFacts {
    task: u64,
    exits: u64,
    expires: u64,
    gen: u32,
    ppid: u32,
    ns: [u32; 3],
    session: u32,
}

/// The last task's facts on this CPU: a task emitting many events reads
/// them once. Valid while it is the same task, no process exited (a parent
/// may have died: re-parenting), the filter (and its sessions) did not change,
/// and for at most `CACHE_TTL_NS`.
#[map(name = "BPFCAP_TASK_TMP")]
static TASK_CACHE: PerCpuArray<TaskFacts> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn task_facts(task: u64, tgid: u32, now: u64) -> (u32, [u32; 3], u32) {
    let exits = exits_so_far();
    let gen = filter_counter();
    let cache = TASK_CACHE.get_ptr_mut(0);
    if let Some(c) = cache {
        let c = unsafe { &*c };
        if c.task == task && c.exits == exits && c.gen == gen && now < c.expires {
            return (c.ppid, c.ns, c.session);
        }
    }
    let ppid = peek::<u32>(peek::<u64>(task, off!(task_real_parent)), off!(task_tgid));
    let nsproxy = peek::<u64>(task, off!(task_nsproxy));
    let ns = [
        ns_inum(nsproxy, off!(nsproxy_mnt_ns), off!(mnt_ns_inum)),
        ns_inum(nsproxy, off!(nsproxy_pid_ns), off!(pid_ns_inum)),
        ns_inum(nsproxy, off!(nsproxy_net_ns), off!(net_ns_inum)),
    ];
    let mut session = 0;
    if filter().is_some_and(|cfg| cfg.tracking != 0) {
        // The key must live on the stack: map lookups do not accept ring
        // buffer memory as a key before 6.x.
        if let Some(t) = unsafe { TRACKED.get(&tgid) } {
            session = t.session;
        }
    }
    if let Some(c) = cache {
        unsafe { *c = TaskFacts { task, exits, expires: now + CACHE_TTL_NS, gen, ppid, ns, session } };
    }
    (ppid, ns, session)
}

#[inline(always)]
pub fn exits_so_far() -> u64 {
    EXITS.get(0).map_or(0, |e| *e)
}

// -- the in-kernel filter ---------------------------------------------------------------

/// The filter generation in force and its configuration.
#[inline(always)]
pub fn filter() -> Option<&'static FilterConfig> {
    let gen = *FILTER_GEN.get(0)?;
    FILTERS.get(gen & 1)
}

/// The filter generation counter: it changes whenever the filter does; its
/// parity selects which half of the filter maps is in force.
#[inline(always)]
fn filter_counter() -> u32 {
    FILTER_GEN.get(0).map_or(0, |g| *g)
}

#[inline(always)]
fn count_drop(reason: u32, kind: u16) {
    if let Some(slot) = DROPS.get_ptr_mut(reason * kind::COUNT + kind as u32) {
        unsafe { *slot += 1 };
    }
}

/// Whether the current process belongs to the pid set, directly or (with
/// follow_children) as a descendant tracked from fork events.
///
/// With follow_children, userspace puts the filter pids themselves into
/// `TRACKED`, so a process outside every tree costs one lookup.
#[inline(always)]
fn pid_matches(gen: u32, tgid: u32, follow: bool) -> bool {
    if !follow {
        return unsafe { FILTER_PIDS.get(&GenId { gen, id: tgid }) }.is_some();
    }
    match unsafe { TRACKED.get(&tgid) } {
        None => false,
        Some(t) => {
            let root = t.root;
            unsafe { FILTER_PIDS.get(&GenId { gen, id: root }) }.is_some()
                || unsafe { FILTER_PIDS.get(&GenId { gen, id: tgid }) }.is_some()
        }
    }
}

/// `pid_matches` through this CPU's one-entry cache. Valid while the filter
/// generation is the same (a new filter, new pids) and the membership did not
/// change (see `MEMBERSHIP`).
#[inline(always)]
fn pid_matches_cached(gen: u32, counter: u32, pid_tgid: u64, follow: bool) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    let membership = MEMBERSHIP.get(0).map_or(0, |m| *m);
    let Some(cache) = PID_CACHE.get_ptr_mut(0) else { return pid_matches(gen, tgid, follow) };
    let cache = unsafe { &mut *cache };
    if cache.pid_tgid == pid_tgid && cache.membership == membership && cache.gen == counter {
        return cache.pass != 0;
    }
    let pass = pid_matches(gen, tgid, follow);
    *cache = PidDecision { pid_tgid, membership, gen: counter, pass: pass as u32 };
    pass
}

/// Whether the current task's cgroup (v2) lies in one of the filtered
/// subtrees: the ids of its kernfs node and of its ancestors up to the root
/// are looked up. (bpf_get_current_ancestor_cgroup_id would
/// do, but tracing programs only have it from 5.12 on.)
#[inline(always)]
fn cgroup_matches(gen: u32) -> bool {
    let task = unsafe { h::bpf_get_current_task() };
    let css = peek::<u64>(task, off!(task_cgroups));
    let cgrp = peek::<u64>(css, off!(css_set_dfl_cgrp));
    let mut kn = peek::<u64>(cgrp, off!(cgroup_kn));
    for _ in 0..MAX_CGROUP_LEVEL {
        if kn == 0 {
            return false;
        }
        let id = peek::<u64>(kn, off!(kn_id));
        if unsafe { FILTER_CGROUPS.get(&GenCgroup { gen: gen as u64, id }) }.is_some() {
            return true;
        }
        kn = peek::<u64>(kn, off!(kn_parent));
    }
    false
}

const MAX_CGROUP_LEVEL: u32 = 16;

/// Whether an event of `kind` from the current task passes the filter, the
/// sampling and the rate limit; counts it by reason when it does not. Cheapest
/// checks first; nothing is read or written for an event that fails early.
#[inline(always)]
pub fn admit(kind: u16) -> bool {
    if !enabled(kind) {
        return false;
    }
    let counter = filter_counter();
    let gen = counter & 1;
    let Some(cfg) = FILTERS.get(gen) else { return true };
    if cfg.types & (1u64 << (kind as u64 & 63)) == 0 {
        count_drop(drop_reason::FILTERED, kind);
        return false;
    }
    let fields = cfg.fields;
    if fields != 0 && !fields_match(cfg, gen, counter) {
        count_drop(drop_reason::FILTERED, kind);
        return false;
    }
    let threshold = cfg.sample[(kind as usize) % (kind::COUNT as usize)];
    if threshold != u32::MAX && unsafe { h::bpf_get_prandom_u32() } >= threshold {
        count_drop(drop_reason::SAMPLED, kind);
        return false;
    }
    if cfg.rate_per_sec != 0 && !take_token(cfg) {
        count_drop(drop_reason::RATE_LIMITED, kind);
        return false;
    }
    true
}

/// Whether the filter's event types take `kind` (for an event that follows
/// one `admit` took from the same task: a failed connect's close).
#[inline(always)]
pub fn admit_type(kind: u16) -> bool {
    enabled(kind) && FILTERS.get(filter_counter() & 1).is_none_or(|cfg| cfg.types & (1u64 << (kind as u64 & 63)) != 0)
}

#[inline(always)]
fn fields_match(cfg: &FilterConfig, gen: u32, counter: u32) -> bool {
    let fields = cfg.fields;
    if fields & filter_field::PIDS != 0 {
        let pid_tgid = unsafe { h::bpf_get_current_pid_tgid() };
        if !pid_matches_cached(gen, counter, pid_tgid, cfg.follow_children != 0) {
            return false;
        }
    }
    if fields & filter_field::UIDS != 0 {
        let uid = unsafe { h::bpf_get_current_uid_gid() } as u32;
        if unsafe { FILTER_UIDS.get(&GenId { gen, id: uid }) }.is_none() {
            return false;
        }
    }
    if fields & (filter_field::COMM | filter_field::EXCLUDE_COMM) != 0 {
        let m = comm_decision(counter);
        if m & comm_match::EXCLUDE != 0 {
            return false;
        }
        if fields & filter_field::COMM != 0 && m & comm_match::INCLUDE == 0 {
            return false;
        }
    }
    if fields & filter_field::CGROUPS != 0 && !cgroup_matches(gen) {
        return false;
    }
    true
}

/// The `FILTER_COMMS` entry of the current task's comm, through this CPU's
/// one-entry cache (by comm and filter generation counter): a hash lookup
/// with a 20-byte key costs more than comparing two words.
#[inline(always)]
fn comm_decision(counter: u32) -> u8 {
    let mut comm = [0u64; 2];
    unsafe { h::bpf_get_current_comm(comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    let Some(cache) = COMM_CACHE.get_ptr_mut(0) else { return 0 };
    let cache = unsafe { &mut *cache };
    if cache.comm == comm && cache.gen == counter && cache.valid != 0 {
        return cache.matched as u8;
    }
    let mut key = GenComm { gen: counter & 1, comm: [0; COMM_LEN] };
    unsafe { core::ptr::copy_nonoverlapping(comm.as_ptr().cast::<u8>(), key.comm.as_mut_ptr(), COMM_LEN) };
    let matched = unsafe { FILTER_COMMS.get(&key) }.copied().unwrap_or(0);
    *cache = CommDecision { comm, gen: counter, valid: 1, matched: matched as u32, _pad: 0 };
    matched
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CommDecision {
    comm: [u64; 2],
    /// The filter generation counter it was made under.
    gen: u32,
    valid: u32,
    matched: u32,
    _pad: u32,
}

#[map(name = "BPFCAP_COMM_CACHE")]
static COMM_CACHE: PerCpuArray<CommDecision> = PerCpuArray::with_max_entries(1, 0);

/// The global token bucket: `rate_per_sec` tokens a second, at most
/// `rate_burst` saved. Updated with atomics, without a lock; concurrent
/// refills on several CPUs may lose a little of a refill, never add extra.
#[inline(always)]
fn take_token(cfg: &FilterConfig) -> bool {
    let Some(state) = RATE.get_ptr_mut(0) else { return true };
    let state = unsafe { &mut *state };
    let now = unsafe { h::bpf_ktime_get_ns() };
    let last = state.last_ns;
    let elapsed = now.saturating_sub(last);
    // Refill at most every 100 µs, by whoever sees the bucket stale first.
    if elapsed > 100_000 {
        state.last_ns = now;
        // milli-tokens: µs elapsed × events/s / 1000 (unsigned: BPF has no signed division)
        let add = ((elapsed / 1000) * cfg.rate_per_sec as u64 / 1000) as i64;
        let cap = cfg.rate_burst as i64 * 1000;
        let cur = state.milli_tokens;
        state.milli_tokens = if cur + add > cap { cap } else { cur + add };
    }
    if state.milli_tokens < 1000 {
        return false;
    }
    // An atomic add whose result is unused (BPF_XADD, which 5.10 has; fetching
    // atomics need 5.12). Two CPUs racing here may both take the last token.
    unsafe {
        atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(&mut state.milli_tokens, -1000);
    }
    true
}

// -- process trees ------------------------------------------------------------------------

/// At a fork: the child joins the parent's tracked tree, or starts one when
/// the parent is a filter pid and children are followed.
///
/// A tracked parent passes its tree on whatever the filter in force: userspace
/// fills TRACKED for a new filter before it flips to it, and a child forked
/// in between must not fall out of the tree.
#[inline(always)]
pub fn track_fork(parent_tgid: u32, child_tgid: u32) {
    let entry = match unsafe { TRACKED.get(&parent_tgid) } {
        Some(t) => *t,
        None => {
            let Some(cfg) = filter() else { return };
            let gen = filter_counter() & 1;
            if cfg.tracking == 0
                || cfg.follow_children == 0
                || unsafe { FILTER_PIDS.get(&GenId { gen, id: parent_tgid }) }.is_none()
            {
                return;
            }
            Track { root: parent_tgid, session: 0, exiting: 0 }
        }
    };
    let _ = TRACKED.insert(&child_tgid, &Track { exiting: 0, ..entry }, 0);
    bump(&MEMBERSHIP);
}

/// At a process's exit: cached pid decisions expire (its pid may be reused).
/// It stays in its tree while it closes its files (sockets it never closed
/// are closed after this: those events are its tree's); `track_free` forgets it.
#[inline(always)]
pub fn track_exit(tgid: u32) {
    bump(&EXITS);
    if let Some(t) = TRACKED.get_ptr_mut(&tgid) {
        unsafe { (*t).exiting = 1 };
    } else if let Some(cfg) = filter() {
        // A filter pid matched without followChildren: its pid may be reused.
        let gen = filter_counter() & 1;
        if cfg.fields & filter_field::PIDS != 0 && unsafe { FILTER_PIDS.get(&GenId { gen, id: tgid }) }.is_some() {
            bump(&MEMBERSHIP);
        }
    }
}

/// When an exited process's task is freed: out of its tree. An entry made
/// since for a new process with the same pid is not exiting and stays.
#[inline(always)]
pub fn track_free(tgid: u32) {
    if unsafe { TRACKED.get(&tgid) }.is_some_and(|t| t.exiting != 0) {
        let _ = TRACKED.remove(&tgid);
        bump(&MEMBERSHIP);
    }
}

#[inline(always)]
pub fn bump(counter: &Array<u64>) {
    if let Some(c) = counter.get_ptr_mut(0) {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(c, 1) };
    }
}

/// Submit flags implementing the wake-up policy: the reader is woken by the
/// record that takes the pending data across the watermark, and by no other.
/// A reader that falls behind (or stops) is not woken again and again while
/// the ring stays above the watermark: a wake-up costs the traced process
/// microseconds, and the reader drains every `pollInterval` anyway.
#[inline(always)]
pub fn wakeup_flags(ring: *mut core::ffi::c_void, size: u64) -> u64 {
    let watermark = unsafe { core::ptr::read_volatile(&SETTINGS.wakeup_bytes) };
    let pending = unsafe { h::bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA as u64) };
    if pending < watermark && pending + size >= watermark {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Whether this CPU's ring can take `size` more bytes. Checked before an
/// expensive record (a path walk) is built: with a reader that stopped, the
/// traced process pays for the filter and this test, and the loss is counted.
#[inline(always)]
pub fn ring_has_room(size: u64) -> bool {
    let pending = unsafe { h::bpf_ringbuf_query(ring(), BPF_RB_AVAIL_DATA as u64) };
    pending + size <= unsafe { core::ptr::read_volatile(&SETTINGS.ring_bytes) }
}

/// Counts a record the ring had no room for.
#[inline(always)]
pub fn count_lost(kind: u16) {
    if let Some(slot) = LOST.get_ptr_mut(kind as u32) {
        unsafe { *slot += 1 };
    }
}

/// Sends a fixed-size record: reserve, fill, submit (no copy through the stack).
#[inline(always)]
pub fn emit<T: 'static>(kind: u16, fill: impl FnOnce(&mut T)) {
    let size = core::mem::size_of::<T>();
    let ring = ring();
    let flags = wakeup_flags(ring, size as u64);
    let ptr = unsafe { h::bpf_ringbuf_reserve(ring, size as u64, 0) } as *mut T;
    if ptr.is_null() {
        count_lost(kind);
        return;
    }
    let rec = unsafe { &mut *ptr };
    // SAFETY: every record type starts with a Header (repr(C)).
    let hdr = unsafe { &mut *(ptr as *mut Header) };
    fill_header(hdr, kind);
    hdr.size = size as u32;
    fill(rec);
    unsafe { h::bpf_ringbuf_submit(ptr.cast(), flags) };
}

/// This CPU's ring, as the helpers want it.
#[inline(always)]
pub fn ring() -> *mut core::ffi::c_void {
    let rings = unsafe { core::ptr::read_volatile(&SETTINGS.rings) };
    let map: &RingBuf = if rings <= 1 {
        &EVENTS
    } else {
        match unsafe { h::bpf_get_smp_processor_id() } & (rings - 1) {
            0 => &EVENTS,
            1 => &EVENTS1,
            2 => &EVENTS2,
            _ => &EVENTS3,
        }
    };
    map as *const RingBuf as *mut core::ffi::c_void
}

/// Argument `i` of a syscall tracepoint record (`ret` of a sys_exit is slot 0),
/// loaded from the context directly: no helper call on the hot path. The
/// layout (8-byte slots from offset 16) is checked in userspace at attach time.
#[inline(always)]
pub fn syscall_arg(ctx: &TracePointContext, i: usize) -> u64 {
    unsafe { *(ctx.as_ptr() as *const u8).add(16 + 8 * i).cast::<u64>() }
}

/// Whether userspace asked for events of `kind`.
#[inline(always)]
pub fn enabled(kind: u16) -> bool {
    ENABLED.get(kind as u32).is_some_and(|v| *v != 0)
}

/// Sends the first `size` bytes of a record built in scratch memory, with the
/// wake-up policy; `size` must be bounded (masked) by the caller for the verifier.
#[inline(always)]
pub fn output(kind: u16, rec: *mut core::ffi::c_void, size: usize) -> bool {
    let ring = ring();
    let ret = unsafe { h::bpf_ringbuf_output(ring, rec, size as u64, wakeup_flags(ring, size as u64)) };
    if ret != 0 {
        count_lost(kind);
    }
    ret == 0
}

/// The `struct file *` behind descriptor `fd` of the current task, or 0.
#[inline(always)]
pub fn file_of_fd(fd: i64) -> u64 {
    if fd < 0 {
        return 0;
    }
    let task = unsafe { h::bpf_get_current_task() };
    let files = peek::<u64>(task, off!(task_files));
    let fdt = peek::<u64>(files, off!(files_fdt));
    // max_fds and fd are neighbours in struct fdtable: one read for both.
    let (max, fds) = if off!(fdt_fd) == off!(fdt_max_fds) + 8 {
        let pair = peek::<[u64; 2]>(fdt, off!(fdt_max_fds));
        (pair[0] as u32, pair[1])
    } else {
        (peek::<u32>(fdt, off!(fdt_max_fds)), peek::<u64>(fdt, off!(fdt_fd)))
    };
    if fd as u64 >= max as u64 || fds == 0 {
        return 0;
    }
    peek::<u64>(fds + fd as u64 * 8, 0)
}
