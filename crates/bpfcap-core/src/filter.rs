//! The in-kernel filter: programming its maps from a [`FilterSpec`], with a
//! generation flip so live programs see the old filter or the new one, never
//! a mix; process-tree tracking and session labels; drop counters.

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use bpfcap_common::{
    comm_match, drop_reason, filter_field, kind, FilterConfig, GenCgroup, GenComm, GenId, RateState, Track, COMM_LEN,
    MAX_FILTER_IDS, MAX_TRACKED,
};

use crate::{
    cgroups,
    error::{Error, Result},
};

/// What passes: AND across fields, OR within one; an empty field constrains nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterSpec {
    pub pids: Vec<u32>,
    pub uids: Vec<u32>,
    pub comm: Vec<String>,
    pub exclude_comm: Vec<String>,
    /// cgroup v2 paths whose subtrees pass (`cgroupPaths`).
    pub cgroup_paths: Vec<String>,
    /// Containers whose cgroups pass (`containerIds`), including ones started later.
    pub container_ids: Vec<String>,
    /// The two above resolved to cgroup v2 subtrees, as `(id, level)`.
    pub cgroups: Vec<(u64, u32)>,
    /// Event kinds that pass (`None`: all).
    pub types: Option<Vec<u16>>,
    pub follow_children: bool,
    /// Fraction of events kept, for every kind (1.0: all) ...
    pub sampling_rate: f64,
    /// ... or for some kinds.
    pub sampling_by_type: Vec<(u16, f64)>,
    /// Global token bucket (0: no limit).
    pub max_events_per_sec: u32,
}

impl Default for FilterSpec {
    fn default() -> Self {
        Self {
            pids: Vec::new(),
            uids: Vec::new(),
            comm: Vec::new(),
            exclude_comm: Vec::new(),
            cgroup_paths: Vec::new(),
            container_ids: Vec::new(),
            cgroups: Vec::new(),
            types: None,
            follow_children: true,
            sampling_rate: 1.0,
            sampling_by_type: Vec::new(),
            max_events_per_sec: 0,
        }
    }
}

fn too_many(field: &'static str, n: usize) -> Error {
    Error::Config { field, value: format!("{n} entries"), allowed: format!("at most {MAX_FILTER_IDS} entries") }
}

fn comm_key(gen: u32, comm: &str) -> Result<GenComm> {
    if comm.is_empty() || comm.len() >= COMM_LEN {
        return Err(Error::Config {
            field: "comm",
            value: comm.to_owned(),
            allowed: format!("1 to {} bytes (the kernel keeps the first {} of a name)", COMM_LEN - 1, COMM_LEN - 1),
        });
    }
    let mut key = GenComm { gen, comm: [0; COMM_LEN] };
    key.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    Ok(key)
}

fn sample_threshold(field: &'static str, rate: f64) -> Result<u32> {
    if !(rate > 0.0 && rate <= 1.0) {
        return Err(Error::Config { field, value: rate.to_string(), allowed: "a fraction in (0, 1]".into() });
    }
    Ok(if rate >= 1.0 { u32::MAX } else { (rate * 4_294_967_296.0) as u32 })
}

impl FilterSpec {
    /// Checks every field, building the kernel's configuration of it.
    pub fn config(&self, tracking: bool) -> Result<FilterConfig> {
        for (field, n) in [
            ("pids", self.pids.len()),
            ("uids", self.uids.len()),
            ("comm", self.comm.len() + self.exclude_comm.len()),
            ("cgroupPaths", self.cgroups.len()),
        ] {
            if n > MAX_FILTER_IDS as usize {
                return Err(too_many(field, n));
            }
        }
        if let Some(&p) = self.pids.iter().find(|&&p| p == 0) {
            return Err(Error::Config { field: "pids", value: p.to_string(), allowed: "process ids from 1".into() });
        }
        for c in self.comm.iter().chain(&self.exclude_comm) {
            comm_key(0, c)?;
        }
        let mut fields = 0;
        for (on, bit) in [
            (!self.pids.is_empty(), filter_field::PIDS),
            (!self.uids.is_empty(), filter_field::UIDS),
            (!self.comm.is_empty(), filter_field::COMM),
            (!self.exclude_comm.is_empty(), filter_field::EXCLUDE_COMM),
            // Containers not started yet match nothing until their cgroup appears.
            (
                !(self.cgroups.is_empty() && self.cgroup_paths.is_empty() && self.container_ids.is_empty()),
                filter_field::CGROUPS,
            ),
        ] {
            if on {
                fields |= bit;
            }
        }
        let types = match &self.types {
            None => u64::MAX,
            // (a kind the kernel never makes, such as `loss`, has no bit: nothing passes for it)
            Some(kinds) => kinds.iter().filter(|&&k| u32::from(k) < kind::COUNT).fold(0u64, |m, &k| m | 1 << k),
        };
        let mut sample = [sample_threshold("samplingRate", self.sampling_rate)?; kind::COUNT as usize];
        for &(k, r) in &self.sampling_by_type {
            if let Some(slot) = sample.get_mut(k as usize) {
                *slot = sample_threshold("samplingRate", r)?;
            }
        }
        if let Some(&(_, level)) = self.cgroups.iter().find(|(_, l)| *l >= 16) {
            return Err(Error::Config {
                field: "cgroupPaths",
                value: format!("a cgroup at level {level}"),
                allowed: "cgroups at most 15 levels below the root".into(),
            });
        }
        Ok(FilterConfig {
            fields,
            follow_children: u32::from(self.follow_children),
            types,
            rate_per_sec: self.max_events_per_sec,
            // A tenth of a second's worth of events, saved for a burst.
            rate_burst: if self.max_events_per_sec == 0 { 0 } else { (self.max_events_per_sec / 10).max(1) },
            sample,
            tracking: u32::from(tracking || (self.follow_children && !self.pids.is_empty())),
        })
    }
}

/// The filter maps of a loaded object.
pub struct FilterMaps {
    gen: Array<MapData, u32>,
    configs: Array<MapData, FilterConfig>,
    pids: HashMap<MapData, GenId, u8>,
    uids: HashMap<MapData, GenId, u8>,
    comms: HashMap<MapData, GenComm, u8>,
    cgroups: HashMap<MapData, GenCgroup, u8>,
    tracked: HashMap<MapData, u32, Track>,
    drops: PerCpuArray<MapData, u64>,
    rate: Array<MapData, RateState>,
    /// The generation counter: its parity selects the half of the maps in force.
    counter: u32,
    /// What is in force, to re-apply when only tracking changes.
    pub current: FilterSpec,
    sessions: bool,
}

fn map_err(name: &str) -> impl Fn(aya::maps::MapError) -> Error + '_ {
    move |e| Error::load_from(name, e)
}

impl FilterMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self> {
        fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            ebpf: &mut aya::Ebpf,
            name: &str,
        ) -> Result<T> {
            let map = ebpf.take_map(name).ok_or_else(|| Error::load(name, "map missing from the BPF object"))?;
            T::try_from(map).map_err(map_err(name))
        }
        let mut maps = Self {
            gen: take(ebpf, "BPFCAP_FILTER_GEN")?,
            configs: take(ebpf, "BPFCAP_FILTERS")?,
            pids: take(ebpf, "BPFCAP_F_PIDS")?,
            uids: take(ebpf, "BPFCAP_F_UIDS")?,
            comms: take(ebpf, "BPFCAP_F_COMMS")?,
            cgroups: take(ebpf, "BPFCAP_F_CGROUPS")?,
            tracked: take(ebpf, "BPFCAP_TRACKED")?,
            drops: take(ebpf, "BPFCAP_DROPS")?,
            rate: take(ebpf, "BPFCAP_RATE")?,
            counter: 0,
            current: FilterSpec::default(),
            sessions: false,
        };
        // Array maps start zeroed, which would let nothing through.
        maps.configs.set(0, FilterConfig::OPEN, 0).map_err(map_err("BPFCAP_FILTERS"))?;
        maps.gen.set(0, 0, 0).map_err(map_err("BPFCAP_FILTER_GEN"))?;
        Ok(maps)
    }

    /// Puts `spec` in force: fills the inactive generation, then flips to it.
    /// On error nothing changes and the previous filter stays in force.
    pub fn apply(&mut self, spec: &FilterSpec) -> Result<()> {
        let config = spec.config(self.sessions)?;
        let counter = self.counter.wrapping_add(1);
        let next = counter & 1;
        self.clear_gen(next)?;
        let one = |e| map_err("filter")(e);
        for &pid in &spec.pids {
            self.pids.insert(GenId { gen: next, id: pid }, 1, 0).map_err(one)?;
        }
        for &uid in &spec.uids {
            self.uids.insert(GenId { gen: next, id: uid }, 1, 0).map_err(one)?;
        }
        let mut comms: std::collections::HashMap<[u8; COMM_LEN], u8> = std::collections::HashMap::new();
        for c in &spec.comm {
            *comms.entry(comm_key(next, c)?.comm).or_default() |= comm_match::INCLUDE;
        }
        for c in &spec.exclude_comm {
            *comms.entry(comm_key(next, c)?.comm).or_default() |= comm_match::EXCLUDE;
        }
        for (comm, m) in comms {
            self.comms.insert(GenComm { gen: next, comm }, m, 0).map_err(one)?;
        }
        for &(id, _) in &spec.cgroups {
            self.cgroups.insert(GenCgroup { gen: next as u64, id }, 1, 0).map_err(one)?;
        }
        if spec.follow_children {
            // The programs look a process up in TRACKED first: the filter pids go
            // there too, and so do descendants forked before the filter was set.
            for &pid in &spec.pids {
                let (session, exiting) = self.tracked.get(&pid, 0).map(|t| (t.session, t.exiting)).unwrap_or((0, 0));
                self.tracked.insert(pid, Track { root: pid, session, exiting }, 0).map_err(|_| Error::Config {
                    field: "pids",
                    value: pid.to_string(),
                    allowed: format!("at most {MAX_TRACKED} tracked processes at once"),
                })?;
                for child in cgroups::descendants(pid) {
                    if self.tracked.get(&child, 0).is_err() {
                        let _ = self.tracked.insert(child, Track { root: pid, session, exiting: 0 }, 0);
                    }
                }
            }
        }
        if config.rate_per_sec != 0 && config.rate_per_sec != self.current.max_events_per_sec {
            let full =
                RateState { milli_tokens: config.rate_burst as i64 * 1000, last_ns: crate::clock::monotonic_ns() };
            self.rate.set(0, full, 0).map_err(one)?;
        }
        self.configs.set(next, config, 0).map_err(one)?;
        self.gen.set(0, counter, 0).map_err(one)?; // the flip: programs now read `next`
        self.counter = counter;
        self.current = spec.clone();
        Ok(())
    }

    fn clear_gen(&mut self, gen: u32) -> Result<()> {
        let e = |e| map_err("filter")(e);
        let keys: Vec<GenId> = self.pids.keys().filter_map(|k| k.ok()).filter(|k| k.gen == gen).collect();
        for k in keys {
            self.pids.remove(&k).map_err(e)?;
        }
        let keys: Vec<GenId> = self.uids.keys().filter_map(|k| k.ok()).filter(|k| k.gen == gen).collect();
        for k in keys {
            self.uids.remove(&k).map_err(e)?;
        }
        let keys: Vec<GenComm> = self.comms.keys().filter_map(|k| k.ok()).filter(|k| k.gen == gen).collect();
        for k in keys {
            self.comms.remove(&k).map_err(e)?;
        }
        let keys: Vec<GenCgroup> = self.cgroups.keys().filter_map(|k| k.ok()).filter(|k| k.gen == gen as u64).collect();
        for k in keys {
            self.cgroups.remove(&k).map_err(e)?;
        }
        Ok(())
    }

    /// Labels the tree of `pid` (the process and its descendants, present and
    /// future) with session `session`.
    pub fn track(&mut self, pid: u32, session: u32) -> Result<()> {
        let e = |e| map_err("BPFCAP_TRACKED")(e);
        // A process already in a followed tree keeps its root: the label is added.
        let root = self.tracked.get(&pid, 0).map(|t| t.root).unwrap_or(pid);
        let entry = Track { root, session, exiting: 0 };
        self.tracked.insert(pid, entry, 0).map_err(|err| match err {
            aya::maps::MapError::SyscallError(_) => Error::Config {
                field: "track",
                value: pid.to_string(),
                allowed: format!("at most {MAX_TRACKED} tracked processes at once"),
            },
            other => e(other),
        })?;
        for child in cgroups::descendants(pid) {
            let _ = self.tracked.insert(child, entry, 0);
        }
        // Re-applying turns tracking on and starts a new generation, which
        // expires the programs' cached sessions of already running tasks.
        self.sessions = true;
        let spec = self.current.clone();
        self.apply(&spec)
    }

    /// Events dropped in the kernel: `[reason][kind]`.
    pub fn drops(&self) -> Result<Vec<Vec<u64>>> {
        (0..drop_reason::COUNT)
            .map(|r| {
                (0..kind::COUNT)
                    .map(|k| {
                        self.drops
                            .get(&(r * kind::COUNT + k), 0)
                            .map(|v| v.iter().sum())
                            .map_err(map_err("BPFCAP_DROPS"))
                    })
                    .collect()
            })
            .collect()
    }

    /// Whether the fork and exit programs must run: they keep process trees
    /// (sessions, followed pids) current, and exits expire the programs'
    /// cached pid decisions (a pid may be reused).
    pub fn tracking(&self) -> bool {
        self.sessions || !self.current.pids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_spec() {
        let spec = FilterSpec {
            pids: vec![10],
            comm: vec!["sh".into()],
            cgroups: vec![(99, 3)],
            types: Some(vec![kind::PROCESS_EXEC, kind::FILE_OPEN]),
            sampling_rate: 0.5,
            sampling_by_type: vec![(kind::FILE_OPEN, 1.0)],
            max_events_per_sec: 1000,
            ..FilterSpec::default()
        };
        let c = spec.config(false).unwrap();
        assert_eq!(c.fields, filter_field::PIDS | filter_field::COMM | filter_field::CGROUPS);
        assert_eq!(c.types, 1 << 1 | 1 << 7);
        assert_eq!(c.sample[kind::PROCESS_EXEC as usize], 1 << 31);
        assert_eq!(c.sample[kind::FILE_OPEN as usize], u32::MAX);
        assert_eq!((c.rate_per_sec, c.tracking, c.follow_children), (1000, 1, 1));
        assert_eq!(FilterSpec::default().config(false).unwrap(), FilterConfig { tracking: 0, ..FilterConfig::OPEN });
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = |spec: FilterSpec| spec.config(false).unwrap_err().to_string();
        assert!(err(FilterSpec { sampling_rate: 0.0, ..FilterSpec::default() })
            .contains("samplingRate = 0: a fraction in (0, 1]"));
        assert!(err(FilterSpec { sampling_rate: 1.5, ..FilterSpec::default() }).contains("samplingRate = 1.5"));
        assert!(err(FilterSpec { pids: vec![0], ..FilterSpec::default() }).contains("invalid pids = 0"));
        assert!(err(FilterSpec { comm: vec!["a-very-long-command".into()], ..FilterSpec::default() })
            .contains("invalid comm"));
        assert!(err(FilterSpec { uids: vec![1; 5000], ..FilterSpec::default() })
            .contains("uids = 5000 entries: at most 4096"));
    }
}
