//! A live capture: the loaded BPF object, the probes attached on demand, and
//! the ring buffer they write to, read and decoded in batches.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    time::Duration,
};

use std::{collections::HashMap, sync::Arc};

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    EbpfLoader,
};
use bpfcap_common::{drop_reason, kind, Offsets, Settings, SockStateLayout, MAX_RINGS};

use crate::{
    attach::{self, Link},
    btf::Btf,
    cgroups::{self, CgroupInfo},
    clock, containers,
    decode::{decode, decode_into, decode_raw, views, DecodeStats, View},
    enrich::Enricher,
    error::{Error, Result},
    event::{kind_name, Event, Payload},
    fallback::{self, Attacher, ProbeStatus},
    filter::{FilterMaps, FilterSpec},
    losses::{self, Announced},
    object::{map_error, Object, TypeCheck, BPF_OBJECT},
    offsets,
    probes::{self, ProbeSpec, ProgType},
    release,
    rings::Rings,
    sys, tracefs,
    user_probe::{UserProbe, UserProbeSpec},
};

/// The probes that keep the kernel's process trees (followed pids, sessions) current.
const TRACKING_PROBES: [&str; 2] = ["sched_process_fork", "sched_process_exit"];
/// The internal probe following cgroup creation for `containerIds` filters.
const CGROUP_WATCH: &str = "__bpfcap_cgroup_watch";

const RING_MAPS: [&str; MAX_RINGS as usize] = ["BPFCAP_EVENTS", "BPFCAP_EVENTS1", "BPFCAP_EVENTS2", "BPFCAP_EVENTS3"];
const LOST_MAP: &str = "BPFCAP_LOST";
const ENABLED_MAP: &str = "BPFCAP_ENABLED";

/// Load-time settings of a capture.
#[derive(Clone, Copy, Debug)]
pub struct CaptureConfig {
    /// Ring buffer size in bytes: a power of two and a multiple of the page size.
    pub ring_size: u32,
    /// Wake the reader once this many bytes are pending.
    pub wakeup_bytes: u64,
    /// Rings (1, 2 or 4): CPU c writes to ring c % rings, each `ring_size` bytes.
    pub rings: u32,
}

/// Attach mechanisms a capture must not use (to force fallbacks, e.g. in tests).
pub type DisabledMechanisms = Vec<String>;

impl CaptureConfig {
    pub fn validate(&self) -> Result<()> {
        let page = page_size();
        if !self.ring_size.is_power_of_two() || self.ring_size < page || self.ring_size > 1 << 30 {
            return Err(Error::Config {
                field: "ringBufferSize",
                value: self.ring_size.to_string(),
                allowed: format!("a power of two from {page} (one page) to {} bytes", 1u32 << 30),
            });
        }
        if ![1, 2, 4].contains(&self.rings) {
            return Err(Error::Config {
                field: "rings",
                value: self.rings.to_string(),
                allowed: format!("1, 2 or {MAX_RINGS} (one ring, or one per group of CPUs)"),
            });
        }
        Ok(())
    }
}

pub fn page_size() -> u32 {
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as u32
}

/// Counters of the reader side.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReaderStats {
    pub polls: u64,
    pub batches: u64,
    pub decode: DecodeStats,
    /// Events whose cgroup could not be resolved (gone before enrichment).
    pub enrich_failed: u64,
    /// Command-line arguments replaced by `[REDACTED]` (see [`crate::redact`]).
    pub redacted_args: u64,
    /// Filter updates for containers that started after the filter, which
    /// the kernel refused (their events are not selected).
    pub filter_update_errors: u64,
    /// Reads of the kernel's loss counters that failed (their losses are
    /// announced at the next read that works).
    pub loss_check_errors: u64,
}

impl Drop for Capture {
    /// Detaches everything at once. Each tracepoint's release waits for RCU
    /// grace periods in the kernel; a grandchild holding the links takes
    /// those waits ([`release`]). Where it cannot, the links are
    /// detached from one thread each, so that the waits that can overlap do
    /// (25 links: 0.73 s one after the other, 0.41 s at once, on 6.18).
    fn drop(&mut self) {
        for k in 0..kind::COUNT {
            let _ = self.enabled.set(k, 0, 0); // (what runs until the release returns at once)
        }
        let links = self.attacher.take_links();
        let handover = release::hand_over_links();
        std::thread::scope(|s| {
            for link in links {
                s.spawn(move || drop(link));
            }
        });
        drop(handover);
    }
}

pub struct Capture {
    object: Object,
    /// The built-in probes' rings.
    rings: Rings,
    lost: PerCpuArray<MapData, u64>,
    enabled: Array<MapData, u32>,
    /// The built-in probes attached, by the plans that worked.
    attacher: Attacher<Link>,
    /// User-defined probes, each an object instance with its own ring.
    user: Vec<UserProbe>,
    next_probe_id: u32,
    filter: FilterMaps,
    /// Session labels, container facts, redaction.
    enricher: Enricher,
    /// Our BTF reader, for user probes' argument counts (read on first use).
    kernel_btf: Option<Btf>,
    /// Every ring's fd is registered here; readable when any ring is.
    epoll: OwnedFd,
    ring_size: u32,
    settings: Settings,
    pub offsets: Offsets,
    stats: ReaderStats,
    /// The kernel's loss counters as last announced in loss events.
    announced: Announced,
}

impl Capture {
    /// Checks privileges, reads this kernel's BTF, and loads the BPF object
    /// (maps created, no program loaded or attached yet).
    pub fn open(config: CaptureConfig, disabled: DisabledMechanisms) -> Result<Self> {
        config.validate()?;
        release::wait_for_released();
        if let Some(needed) = sys::missing_tracing_caps(sys::effective_caps()) {
            return Err(Error::Privilege { what: "loading BPF programs".into(), needed });
        }
        let release = sys::kernel_release();
        if sys::parse_kernel_version(&release).is_some_and(|v| v < (5, 8, 0)) {
            return Err(Error::KernelFeature {
                feature: "BPF ring buffer".into(),
                reason: format!("needs Linux 5.8 or newer (bpfcap supports 5.10+); this kernel is {release}"),
            });
        }
        let offsets = match Btf::from_sys_fs() {
            Ok(btf) => offsets::from_btf(&btf),
            // Without BTF the programs still run; fields needing offsets stay 0.
            Err(_) => Offsets::UNKNOWN,
        };
        // Tracepoint layouts: readable once tracefs is mounted (else those plans fail later, saying why).
        let tp_sock = tracefs::tracepoint_fields("sock", "inet_sock_set_state")
            .map(|f| tracefs::sock_state_layout(&f))
            .unwrap_or(SockStateLayout::UNKNOWN);
        let settings = Settings {
            wakeup_bytes: config.wakeup_bytes,
            tp_sock,
            rings: config.rings,
            _pad: 0,
            ring_bytes: config.ring_size.into(),
        };
        let mut loader = EbpfLoader::new();
        loader.override_global("OFFSETS", &offsets, true).override_global("SETTINGS", &settings, true);
        for (i, name) in RING_MAPS.iter().enumerate() {
            // Rings not in use still exist in the object: one page each.
            loader.map_max_entries(name, if (i as u32) < config.rings { config.ring_size } else { page_size() });
        }
        let mut object = Object::load(loader, sys::raise_memlock_if_charged(), &release)?;
        let mut rings = Vec::new();
        for name in &RING_MAPS[..config.rings as usize] {
            rings.push(RingBuf::try_from(object.take_map(name)?).map_err(|e| map_error(name, e))?);
        }
        let rings = Rings::new(rings, config.ring_size)?;
        let lost = PerCpuArray::try_from(object.take_map(LOST_MAP)?).map_err(|e| map_error(LOST_MAP, e))?;
        let enabled = Array::try_from(object.take_map(ENABLED_MAP)?).map_err(|e| map_error(ENABLED_MAP, e))?;
        let filter = FilterMaps::take(&mut object.ebpf)?;
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(Error::io("creating an epoll instance", io::Error::last_os_error()));
        }
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        for fd in rings.fds() {
            epoll_add(&epoll, fd)?;
        }
        Ok(Self {
            object,
            rings,
            lost,
            enabled,
            attacher: Attacher::new(disabled),
            user: Vec::new(),
            next_probe_id: 1,
            filter,
            enricher: Enricher::default(),
            kernel_btf: None,
            epoll,
            ring_size: config.ring_size,
            settings,
            offsets,
            stats: ReaderStats::default(),
            announced: Announced::default(),
        })
    }

    /// Loads and attaches a user-defined probe; nothing else is disturbed if it fails.
    pub fn load_user(&mut self, spec: UserProbeSpec) -> Result<u32> {
        if spec.name.is_empty() || self.user.iter().any(|u| *u.name == *spec.name) {
            return Err(Error::Config {
                field: "name",
                value: spec.name,
                allowed: "a non-empty name not used by another loaded program".into(),
            });
        }
        if self.kernel_btf.is_none() {
            self.kernel_btf = Btf::from_sys_fs().ok();
        }
        let id = self.next_probe_id;
        // A user probe's ring: as big as the main one, up to 4 MiB.
        let ring_size = self.ring_size.min(4 << 20);
        let settings = Settings { ring_bytes: ring_size.into(), ..self.settings };
        let globals: [(&str, &[u8]); 2] = [("OFFSETS", pod_bytes(&self.offsets)), ("SETTINGS", pod_bytes(&settings))];
        let probe =
            UserProbe::load(id, spec, BPF_OBJECT, &globals, ring_size, self.kernel_btf.as_ref(), self.object.btf())?;
        for r in &probe.rings {
            epoll_add(&self.epoll, r.as_raw_fd())?;
        }
        self.next_probe_id += 1;
        self.user.push(probe);
        Ok(id)
    }

    /// Detaches and frees a user-defined probe; false if none has that name.
    pub fn unload_user(&mut self, name: &str) -> bool {
        let before = self.user.len();
        self.user.retain(|u| &*u.name != name); // closing the ring fds removes them from epoll
        self.user.len() != before
    }

    /// The loaded user-defined probes.
    pub fn user_probes(&self) -> impl Iterator<Item = &UserProbe> {
        self.user.iter()
    }

    /// Attaches the probe producing `kind` unless it already is.
    pub fn enable_kind(&mut self, kind: u16) -> Result<()> {
        let probe = probes::probe_for_kind(kind)
            .ok_or_else(|| Error::UnknownProbe { name: kind_name(kind).to_owned(), known: probes::names() })?;
        self.enable(probe)
    }

    /// Attaches the probes producing `kinds`. The programs of the plans each
    /// probe will most likely use are loaded first, on several threads at
    /// once: the verifier's work is most of the cost of starting a capture.
    pub fn enable_kinds(&mut self, kinds: &[u16]) -> Result<()> {
        let mut probes = Vec::new();
        for &k in kinds {
            let probe = probes::probe_for_kind(k)
                .ok_or_else(|| Error::UnknownProbe { name: kind_name(k).to_owned(), known: probes::names() })?;
            if !self.attacher.is_active(probe.name) {
                probes.push(probe);
            }
        }
        self.preload(&probes);
        probes.into_iter().try_for_each(|p| self.enable(p))
    }

    /// Loads, in parallel, the programs of each probe's first plan that is not
    /// disabled and whose program type the kernel accepts. A program that fails
    /// here is loaded again by the attach that needs it, which reports why.
    fn preload(&mut self, probes: &[&'static ProbeSpec]) {
        let mut wanted: HashMap<&'static str, (ProgType, &'static str)> = HashMap::new();
        for probe in probes {
            let plan = self.attacher.likely_plan(&mut self.object, probe);
            for at in plan.map_or(&[][..], |p| p.attach) {
                if !self.object.is_loaded(at.program) && (!at.optional || attach::tracepoint_exists(at.target)) {
                    wanted.entry(at.program).or_insert((at.ty, at.target));
                }
            }
        }
        if wanted.len() >= 2 {
            self.object.preload(&wanted);
        }
    }

    /// Attaches a probe by the first of its plans that works and asks its
    /// programs for events; the error names every plan tried and why it failed.
    pub fn enable(&mut self, probe: &'static ProbeSpec) -> Result<()> {
        self.attach_probe(probe)?;
        self.enabled.set(probe.kind as u32, 1, 0).map_err(|e| map_error(ENABLED_MAP, e))?;
        if let Some(st) = self.attacher.active.iter_mut().find(|a| a.name == probe.name) {
            st.enabled = true;
        }
        Ok(())
    }

    /// Attaches a probe without asking for its events (the fork and exit
    /// programs keep the kernel's process trees up to date).
    fn attach_probe(&mut self, probe: &'static ProbeSpec) -> Result<()> {
        self.attacher.attach_probe(&mut self.object, probe)
    }

    /// Detaches a built-in probe (by its name); its kind stops being produced.
    pub fn disable(&mut self, name: &str) -> Result<bool> {
        let active = &mut self.attacher.active;
        let Some(st) = active.iter_mut().find(|a| a.name == name && a.enabled) else {
            return Ok(false);
        };
        self.enabled.set(st.kind as u32, 0, 0).map_err(|e| map_error(ENABLED_MAP, e))?;
        st.enabled = false;
        if !(self.filter.tracking() && TRACKING_PROBES.contains(&name)) {
            self.attacher.detach(name);
        }
        Ok(true)
    }

    /// Puts a filter in force on the live programs (see [`FilterMaps::apply`]):
    /// cgroup paths and container ids are resolved to cgroup ids first. On
    /// error the previous filter stays in force.
    pub fn set_filter(&mut self, mut spec: FilterSpec) -> Result<()> {
        spec.cgroups.clear();
        for p in &spec.cgroup_paths {
            spec.cgroups.push(cgroups::resolve_path(p)?);
        }
        for id in &spec.container_ids {
            if !cgroups::valid_container_id(id) {
                return Err(Error::Config {
                    field: "containerIds",
                    value: id.clone(),
                    allowed: "12 to 64 hexadecimal digits".into(),
                });
            }
            spec.cgroups.extend(cgroups::find_container(id).into_iter().map(|(_, cg, level)| (cg, level)));
        }
        let watch = !spec.container_ids.is_empty();
        self.filter.apply(&spec)?;
        if watch {
            self.watch_cgroups()?;
        }
        if self.filter.tracking() {
            self.attach_tracking()?;
        }
        Ok(())
    }

    /// Marks the process tree of `pid` with a session label that every event
    /// of the tree carries; returns the label's id.
    pub fn track(&mut self, pid: u32, label: &str) -> Result<u32> {
        let id = self.enricher.label_id(label);
        self.filter.track(pid, id)?;
        self.attach_tracking()?;
        Ok(id)
    }

    fn attach_tracking(&mut self) -> Result<()> {
        for name in TRACKING_PROBES {
            let probe = probes::probe_by_name(name).expect("built-in probe");
            self.attach_probe(probe)?;
        }
        Ok(())
    }

    /// Follows cgroup creation, so containers of a `containerIds` filter that
    /// start later are added to it.
    fn watch_cgroups(&mut self) -> Result<()> {
        if self.user.iter().any(|u| &*u.name == CGROUP_WATCH) {
            return Ok(());
        }
        let spec = UserProbeSpec {
            name: CGROUP_WATCH.into(),
            ty: ProgType::Tracepoint,
            target: "cgroup:cgroup_mkdir".into(),
            object: None,
        };
        self.load_user(spec).map(|_| ())
    }

    /// The filter in force.
    pub fn filter_spec(&self) -> &FilterSpec {
        &self.filter.current
    }

    /// Events the programs dropped before the ring: `[reason][kind]` for
    /// reasons filtered, sampled, rate limited.
    pub fn drops(&self) -> Result<Vec<Vec<u64>>> {
        self.filter.drops()
    }

    /// Which program types this kernel accepts: each do-nothing test program
    /// is loaded and attached for a moment (`doctor`). `Err` holds the reason.
    pub fn program_types(&mut self) -> Vec<(&'static str, std::result::Result<(), String>)> {
        probes::SELFTESTS
            .iter()
            .map(|t| {
                if let Some(TypeCheck::Refused(why) | TypeCheck::Denied(why)) = self.object.type_check(t.ty) {
                    return (t.ty.name(), Err(why));
                }
                let r = fallback::Kernel::attach(&mut self.object, t.program, t.ty, t.target)
                    .map(drop) // the link, dropped at once: detached
                    .map_err(|e| e.to_string());
                (t.ty.name(), r)
            })
            .collect()
    }

    /// Each loaded program and the instructions the verifier processed for it
    /// (the main cost of attaching a probe; `None` before 5.16).
    pub fn verifier_costs(&self) -> Vec<(String, Option<u32>)> {
        self.object.verifier_costs()
    }

    pub fn probes(&self) -> &[ProbeStatus] {
        &self.attacher.active
    }

    /// An fd readable when a program woke a reader (an epoll instance over
    /// every ring, edge-triggered); call `take_wakeups` once it was.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Waits up to `timeout` for a wake-up of any ring (a program forced one:
    /// enough data is pending); `Ok(true)` if one came. Records below the
    /// watermark wake no one: the caller drains them when the timeout expires.
    pub fn poll(&mut self, timeout: Duration) -> Result<bool> {
        self.stats.polls += 1;
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        self.wait_epoll(ms)
    }

    /// Consumes the wake-ups that made `fd()` readable, so that it becomes
    /// readable again only at the next wake-up (the rings are registered
    /// edge-triggered: pending data alone does not make it readable).
    pub fn take_wakeups(&mut self) -> Result<bool> {
        self.stats.polls += 1; // an async wait (on `fd()`) just ended
        self.wait_epoll(0)
    }

    fn wait_epoll(&mut self, timeout_ms: i32) -> Result<bool> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let mut woken = false;
        let mut timeout = timeout_ms;
        loop {
            let n =
                unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, timeout) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    return Ok(woken);
                }
                return Err(Error::io("waiting for the ring buffers", err));
            }
            woken |= n > 0;
            if (n as usize) < events.len() {
                return Ok(woken);
            }
            timeout = 0; // more ready than fit: collect the rest without waiting
        }
    }

    /// Decodes up to `max` pending records into `out` (appended), the main
    /// rings first (merged in time order), then the user probes' rings, and
    /// adds session labels and container information; records that fail to
    /// decode are counted and skipped. Returns how many records were read
    /// (with several rings: handed out). Fewer than `max` means nothing
    /// that was pending is left. (A read or write that carries its
    /// permission check is one record and two events.)
    pub fn drain(&mut self, max: usize, out: &mut Vec<Event>) -> usize {
        let first = out.len();
        let stats = &mut self.stats.decode;
        let n = self.rings.read(max, |rec| decode_into(rec, stats, out));
        let n = self.finish_batch(n, max, out, first);
        if clock::monotonic_ns() >= self.announced.next_check_ns {
            self.announce_losses(out);
        }
        n
    }

    /// Loss events (type `loss`) for what the kernel counted since the last
    /// ones, appended to `out`: records a full ring could not take, events
    /// sampled out or rate limited, per kind. `drain` adds them every
    /// `LOSS_CHECK_NS`; a reader calls this once more at the end. Returns how
    /// many it added.
    pub fn announce_losses(&mut self, out: &mut Vec<Event>) -> usize {
        let now = clock::monotonic_ns();
        let (lost, drops) = match (self.lost_in_kernel(), self.filter.drops()) {
            (Ok(lost), Ok(drops)) => (lost, drops),
            _ => {
                self.stats.loss_check_errors += 1;
                self.announced.next_check_ns = now + losses::CHECK_NS;
                return 0;
            }
        };
        let totals = [&lost[..], &drops[drop_reason::SAMPLED as usize], &drops[drop_reason::RATE_LIMITED as usize]];
        self.announced.announce(now, totals, out)
    }

    /// As [`Capture::drain`], but each record of the built-in probes goes to
    /// `f` as a borrowed [`View`], decoded no further: no allocation, and no
    /// enrichment (its `hdr.session` and `hdr.cgroup_id` are there for
    /// [`Capture::session_label`] and [`Capture::cgroup_info`]; command lines
    /// are not redacted in views). The user probes' events are appended to
    /// `user`, enriched, as `drain` does. Returns how many records were read.
    pub fn drain_views(&mut self, max: usize, mut f: impl FnMut(&View<'_>), user: &mut Vec<Event>) -> usize {
        let first = user.len();
        let stats = &mut self.stats.decode;
        let n = self.rings.read(max, |rec| views(rec, stats, &mut f));
        self.finish_batch(n, max, user, first)
    }

    /// Replaces secrets in command lines before anyone sees them (see [`crate::redact`]).
    pub fn set_redact(&mut self, on: bool) {
        self.enricher.redact = on;
    }

    /// The reader's counters.
    pub fn stats(&self) -> ReaderStats {
        ReaderStats { enrich_failed: self.enricher.failed, redacted_args: self.enricher.redacted_args, ..self.stats }
    }

    /// The rest of a batch after `n` records of the built-in rings: the user
    /// probes' events appended to `out`, and everything from `first` enriched.
    fn finish_batch(&mut self, mut n: usize, max: usize, out: &mut Vec<Event>, first: usize) -> usize {
        n += self.drain_user(max - n, out);
        for ev in &mut out[first..] {
            self.enricher.enrich(ev);
        }
        if n > 0 {
            self.stats.batches += 1;
        }
        n
    }

    /// The session label of id `session` (a header's `session`; 0 is none).
    pub fn session_label(&self, session: u32) -> Option<&Arc<str>> {
        self.enricher.label(session)
    }

    /// The user probes' records, up to `max`, appended to `out` (not enriched);
    /// the container watch's are consumed here. Returns how many were read.
    /// (The container watch's new cgroups are handed to
    /// [`Capture::follow_new_containers`]: reading never writes the filter itself.)
    fn drain_user(&mut self, max: usize, out: &mut Vec<Event>) -> usize {
        let mut n = 0;
        let mut new_cgroups = Vec::new();
        for probe in &mut self.user {
            let start = out.len();
            let raw = probe.program.is_some();
            for ring in &mut probe.rings {
                while n < max {
                    let Some(item) = ring.next() else { break };
                    n += 1;
                    // A user's own object: its records are delivered as they are.
                    let ev = if raw {
                        decode_raw(&item, clock::monotonic_ns(), &mut self.stats.decode)
                    } else {
                        decode(&item, &mut self.stats.decode)
                    };
                    out.extend(ev.ok());
                }
            }
            for ev in &mut out[start..] {
                if let Payload::Probe(p) = &mut ev.payload {
                    probe.resolve(p);
                }
            }
            if &*probe.name == CGROUP_WATCH {
                new_cgroups.extend(out.drain(start..).filter_map(|ev| containers::created_cgroup(&ev)));
            }
        }
        if !new_cgroups.is_empty() {
            self.follow_new_containers(&new_cgroups);
        }
        n
    }

    /// What the path of cgroup `id` says (a header's `cgroup_id`), looked up
    /// once and cached; None for 0 or a cgroup gone before we looked.
    pub fn cgroup_info(&mut self, id: u64) -> Option<Arc<CgroupInfo>> {
        self.enricher.cgroup_info(id)
    }

    /// Adds the cgroups of containers the filter names that were just
    /// created (path, id, level) to the filter; a refused update is counted
    /// (`filter_update_errors`), and the next new cgroup tries again.
    fn follow_new_containers(&mut self, created: &[(String, u64, u32)]) {
        let Some(spec) = containers::with_new_containers(&self.filter.current, created) else {
            return;
        };
        if self.filter.apply(&spec).is_err() {
            self.stats.filter_update_errors += 1;
        }
    }

    /// Raw records, undecoded (for recording test fixtures).
    pub fn drain_raw(&mut self, max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.rings.read(max, |rec| out.push(rec.to_vec()));
        out
    }

    /// Bytes written to the rings and not read yet, and the rings' total size.
    pub fn fill(&self) -> (u64, u64) {
        self.rings.fill()
    }

    /// Records lost because a ring was full, per CPU (summed over kinds).
    pub fn lost_by_cpu(&self) -> Result<Vec<u64>> {
        let mut by_cpu: Vec<u64> = Vec::new();
        for k in 0..kind::COUNT {
            let per_cpu = self.lost.get(&k, 0).map_err(|e| map_error(LOST_MAP, e))?;
            for (cpu, v) in per_cpu.iter().enumerate() {
                if by_cpu.len() <= cpu {
                    by_cpu.resize(cpu + 1, 0);
                }
                by_cpu[cpu] += v;
            }
        }
        Ok(by_cpu)
    }

    /// Records the programs could not write because a ring was full, per kind.
    pub fn lost_in_kernel(&self) -> Result<Vec<u64>> {
        let sum = |lost: &PerCpuArray<MapData, u64>, k: u32| -> Result<u64> {
            lost.get(&k, 0).map(|per_cpu| per_cpu.iter().sum()).map_err(|e| map_error(LOST_MAP, e))
        };
        let mut out = (0..kind::COUNT).map(|k| sum(&self.lost, k)).collect::<Result<Vec<_>>>()?;
        for lost in self.user.iter().filter_map(|u| u.lost.as_ref()) {
            out[kind::PROBE as usize] += sum(lost, kind::PROBE as u32)?;
        }
        Ok(out)
    }
}

/// Registers a ring edge-triggered: it is reported once per wake-up, not for
/// as long as data is pending (which would defeat the batching of wake-ups).
fn epoll_add(epoll: &OwnedFd, fd: RawFd) -> Result<()> {
    let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET) as u32, u64: fd as u64 };
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        return Err(Error::io("registering a ring buffer with epoll", io::Error::last_os_error()));
    }
    Ok(())
}

/// The bytes of a plain-old-data value (for globals of other object instances).
fn pod_bytes<T: aya::Pod>(v: &T) -> &[u8] {
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}
