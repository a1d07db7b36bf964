//! What the reader adds to an event that the kernel could not put in its
//! record: the session label of its process tree, what its cgroup's path says
//! (container, pod), and redacted command lines.

use std::{collections::HashMap, sync::Arc};

use crate::{
    cgroups::{self, CgroupInfo},
    event::{Event, Payload},
    redact,
};

/// Entries of the cgroup cache before it is cleared.
const CGROUP_CACHE_MAX: usize = 4096;

pub struct Enricher {
    /// Session labels by id - 1 (the id is what the kernel's records carry).
    labels: Vec<Arc<str>>,
    /// cgroup id -> what its path says (None: gone before we looked).
    cgroup_cache: HashMap<u64, Option<Arc<CgroupInfo>>>,
    /// The path of a cgroup id (`cgroups::path_of_id`; a test's own function).
    path_of: fn(u64) -> Option<String>,
    /// Replace secrets in command lines (see [`crate::redact`]).
    pub redact: bool,
    /// Events whose cgroup could not be resolved (gone before enrichment).
    pub failed: u64,
    /// Command-line arguments replaced by `[REDACTED]`.
    pub redacted_args: u64,
}

impl Default for Enricher {
    fn default() -> Self {
        Self::with_paths(cgroups::path_of_id)
    }
}

impl Enricher {
    fn with_paths(path_of: fn(u64) -> Option<String>) -> Self {
        Self { labels: Vec::new(), cgroup_cache: HashMap::new(), path_of, redact: false, failed: 0, redacted_args: 0 }
    }

    /// The id of session `label` (from 1), made on first use.
    pub fn label_id(&mut self, label: &str) -> u32 {
        match self.labels.iter().position(|l| &**l == label) {
            Some(i) => i as u32 + 1,
            None => {
                self.labels.push(label.into());
                self.labels.len() as u32
            }
        }
    }

    /// The session label of id `session` (a header's `session`; 0 is none).
    pub fn label(&self, session: u32) -> Option<&Arc<str>> {
        self.labels.get((session as usize).checked_sub(1)?)
    }

    /// What the path of cgroup `id` says (a header's `cgroup_id`), looked up
    /// once and cached; None for 0 or a cgroup gone before we looked.
    pub fn cgroup_info(&mut self, id: u64) -> Option<Arc<CgroupInfo>> {
        if id == 0 {
            return None;
        }
        if let Some(info) = self.cgroup_cache.get(&id) {
            return info.clone();
        }
        if self.cgroup_cache.len() >= CGROUP_CACHE_MAX {
            self.cgroup_cache.clear();
        }
        let info = (self.path_of)(id).map(|p| Arc::new(cgroups::parse_path(&p)));
        if info.is_none() {
            // Gone before we looked (or not resolvable): the event keeps null fields.
            self.failed += 1;
        }
        self.cgroup_cache.insert(id, info.clone());
        info
    }

    /// Adds an event's session label and container facts, and redacts its argv.
    pub fn enrich(&mut self, ev: &mut Event) {
        if let (true, Payload::Exec(e)) = (self.redact, &mut ev.payload) {
            self.redacted_args += redact::redact_argv(&mut e.argv) as u64;
        }
        ev.meta.session = self.label(ev.hdr.session).cloned();
        ev.meta.cgroup = self.cgroup_info(ev.hdr.cgroup_id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bpfcap_common::{kind, Header};

    use super::*;
    use crate::{
        event::Meta,
        types::{Exec, IfSet, IfSome},
    };

    static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

    fn paths(id: u64) -> Option<String> {
        LOOKUPS.fetch_add(1, Ordering::Relaxed);
        (id == 7).then(|| {
            "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope".into()
        })
    }

    fn exec(session: u32, cgroup_id: u64, argv: &[&str]) -> Event {
        Event {
            hdr: Header { kind: kind::PROCESS_EXEC, session, cgroup_id, ..Header::default() },
            payload: Exec {
                filename: "/bin/x".into(),
                argv: argv.iter().map(|s| s.to_string()).collect(),
                filename_truncated: IfSet(false),
                filename_raw: IfSome(None),
                argv_raw: IfSome(None),
                interpreter: None,
                argv_truncated: false,
            }
            .into(),
            meta: Meta::default(),
        }
    }

    #[test]
    fn labels_get_one_id_each_and_events_carry_theirs() {
        let mut e = Enricher::with_paths(|_| None);
        assert_eq!((e.label_id("a"), e.label_id("b"), e.label_id("a")), (1, 2, 1));
        let mut ev = exec(2, 0, &[]);
        e.enrich(&mut ev);
        assert_eq!(ev.meta.session.as_deref(), Some("b"));
        let mut ev = exec(0, 0, &[]);
        e.enrich(&mut ev);
        assert_eq!((ev.meta.session, ev.meta.cgroup.is_none(), e.failed), (None, true, 0));
        // (0: no cgroup to look up)
    }

    #[test]
    fn a_cgroup_is_looked_up_once_and_a_gone_one_is_counted() {
        let mut e = Enricher::with_paths(paths);
        let before = LOOKUPS.load(Ordering::Relaxed);
        for _ in 0..3 {
            let mut ev = exec(0, 7, &[]);
            e.enrich(&mut ev);
            assert_eq!(
                ev.meta.cgroup.unwrap().container_id.as_deref(),
                Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
            );
        }
        let mut ev = exec(0, 8, &[]);
        e.enrich(&mut ev);
        e.enrich(&mut ev);
        assert!(ev.meta.cgroup.is_none());
        assert_eq!((LOOKUPS.load(Ordering::Relaxed) - before, e.failed), (2, 1));
    }

    #[test]
    fn argv_is_redacted_only_when_asked_and_counted() {
        let mut e = Enricher::with_paths(|_| None);
        let mut ev = exec(0, 0, &["curl", "--password=hunter2"]);
        e.enrich(&mut ev);
        assert!(matches!(&ev.payload, Payload::Exec(e) if e.argv[1] == "--password=hunter2"));
        e.redact = true;
        e.enrich(&mut ev);
        assert!(matches!(&ev.payload, Payload::Exec(e) if !e.argv[1].contains("hunter2")));
        assert_eq!(e.redacted_args, 1);
    }
}
