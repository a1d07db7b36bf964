//! Attaching a probe by the first of its plans that works, with attachments
//! shared between probes and counted. The kernel is reached only through
//! [`Kernel`], so the algorithm is tested without root against a fake.

use std::collections::HashMap;

use crate::{
    error::{Error, Result},
    probes::{Plan, ProbeSpec, ProgType},
};

/// What attaching needs from the kernel.
pub trait Kernel {
    /// An attachment; dropping it detaches.
    type Link;
    /// Why the kernel takes no programs of type `ty` at all (None: it does,
    /// or the type needs no check). Learned once per type, cheaply.
    fn refuses(&mut self, ty: ProgType) -> Option<String>;
    fn tracepoint_exists(&self, target: &str) -> bool;
    fn attach(&mut self, program: &'static str, ty: ProgType, target: &'static str) -> Result<Self::Link>;
}

/// A probe that is attached, and how.
#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub kind: u16,
    pub mechanism: &'static str,
    /// `program -> target` pairs of the plan that won.
    pub attachments: Vec<(&'static str, &'static str)>,
    /// Why each preferred plan before it failed (`mechanism: reason`).
    pub skipped: Vec<String>,
    /// The optional attachments the plan went on without (`target: reason`).
    pub left_out: Vec<String>,
    /// Whether its events are wanted (else it is attached for process-tree tracking only).
    pub enabled: bool,
}

/// The attached probes and their links, each link shared by the probes whose
/// plans name the same program and target.
pub struct Attacher<L> {
    pub active: Vec<ProbeStatus>,
    links: HashMap<(&'static str, &'static str), (usize, L)>,
    /// Mechanisms never to use (configuration: forcing a fallback).
    disabled: Vec<String>,
}

impl<L> Attacher<L> {
    pub fn new(disabled: Vec<String>) -> Self {
        Self { active: Vec::new(), links: HashMap::new(), disabled }
    }

    pub fn is_active(&self, name: &str) -> bool {
        self.active.iter().any(|a| a.name == name)
    }

    /// Why `plan` is not worth trying here, if it is not.
    fn ruled_out(&self, kernel: &mut impl Kernel<Link = L>, plan: &Plan) -> Option<String> {
        if self.disabled.iter().any(|d| d == plan.mechanism) {
            return Some("disabled by configuration".into());
        }
        plan.attach.first().and_then(|a| kernel.refuses(a.ty))
    }

    /// The plan a probe will most likely attach by: the first one not ruled out.
    pub fn likely_plan(&self, kernel: &mut impl Kernel<Link = L>, probe: &'static ProbeSpec) -> Option<&'static Plan> {
        probe.plans.iter().find(|plan| self.ruled_out(kernel, plan).is_none())
    }

    /// Attaches a probe by the first of its plans that works (nothing if it is
    /// attached already). The error names every plan tried and why it failed;
    /// a missing privilege, if that is what stopped a plan, is the error.
    pub fn attach_probe(&mut self, kernel: &mut impl Kernel<Link = L>, probe: &'static ProbeSpec) -> Result<()> {
        if self.is_active(probe.name) {
            return Ok(());
        }
        let (mut skipped, mut denied) = (Vec::new(), None);
        for plan in probe.plans {
            if let Some(why) = self.ruled_out(kernel, plan) {
                skipped.push(format!("{}: {why}", plan.mechanism));
                continue;
            }
            match self.attach_plan(kernel, plan) {
                Ok((attachments, left_out)) => {
                    self.active.push(ProbeStatus {
                        name: probe.name,
                        kind: probe.kind,
                        mechanism: plan.mechanism,
                        attachments,
                        skipped,
                        left_out,
                        enabled: false,
                    });
                    return Ok(());
                }
                Err(e) => {
                    skipped.push(format!("{}: {e}", plan.mechanism));
                    // A later mechanism may need less; if none works, the missing privilege is the news.
                    if matches!(e, Error::Privilege { .. }) {
                        denied.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(e) = denied {
            return Err(e);
        }
        Err(Error::attach(probe.name, "any mechanism", skipped.join("; ")))
    }

    /// Attaches every program of a plan, or none of them; the optional ones
    /// that cannot be made are left out, and said why.
    #[allow(clippy::type_complexity)]
    fn attach_plan(
        &mut self,
        kernel: &mut impl Kernel<Link = L>,
        plan: &'static Plan,
    ) -> Result<(Vec<(&'static str, &'static str)>, Vec<String>)> {
        let (mut done, mut left_out) = (Vec::new(), Vec::new());
        for at in plan.attach {
            if at.optional && at.ty == ProgType::Tracepoint && !kernel.tracepoint_exists(at.target) {
                continue;
            }
            let key = (at.program, at.target);
            if let Some((users, _)) = self.links.get_mut(&key) {
                *users += 1;
                done.push(key);
                continue;
            }
            match kernel.attach(at.program, at.ty, at.target) {
                Ok(link) => {
                    self.links.insert(key, (1, link));
                    done.push(key);
                }
                // An optional attachment that cannot be made (the rename watch
                // where perf events need CAP_SYS_ADMIN, as on Debian's kernels
                // with perf_event_paranoid 3): the plan goes on without it.
                Err(e) if at.optional => left_out.push(format!("{}: {e}", at.target)),
                Err(e) => {
                    for key in done {
                        self.release(key);
                    }
                    return Err(e);
                }
            }
        }
        Ok((done, left_out))
    }

    fn release(&mut self, key: (&'static str, &'static str)) {
        if let Some((users, _)) = self.links.get_mut(&key) {
            *users -= 1;
            if *users == 0 {
                self.links.remove(&key); // dropping the link detaches it
            }
        }
    }

    /// Detaches probe `name` (its shared links stay while another probe uses them).
    pub fn detach(&mut self, name: &str) {
        if let Some(i) = self.active.iter().position(|a| a.name == name) {
            let status = self.active.remove(i);
            for key in status.attachments {
                self.release(key);
            }
        }
    }

    /// Every link, for detaching them all at once.
    pub fn take_links(&mut self) -> Vec<L> {
        self.active.clear();
        self.links.drain().map(|(_, (_, link))| link).collect()
    }

    /// How many links are attached.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::HashSet, rc::Rc};

    use super::*;
    use crate::probes::{Attach, PROBES};

    /// A kernel that refuses some program types, fails some attaches, and
    /// records which links are alive.
    #[derive(Default)]
    struct Fake {
        refused: HashMap<ProgType, String>,
        failing: HashMap<&'static str, Error>,
        missing_tracepoints: HashSet<&'static str>,
        alive: Rc<RefCell<Vec<(&'static str, &'static str)>>>,
        attaches: usize,
    }

    struct FakeLink((&'static str, &'static str), Rc<RefCell<Vec<(&'static str, &'static str)>>>);

    impl Drop for FakeLink {
        fn drop(&mut self) {
            self.1.borrow_mut().retain(|k| *k != self.0);
        }
    }

    impl Kernel for Fake {
        type Link = FakeLink;
        fn refuses(&mut self, ty: ProgType) -> Option<String> {
            self.refused.get(&ty).cloned()
        }
        fn tracepoint_exists(&self, target: &str) -> bool {
            !self.missing_tracepoints.contains(target)
        }
        fn attach(&mut self, program: &'static str, ty: ProgType, target: &'static str) -> Result<FakeLink> {
            self.attaches += 1;
            if let Some(e) = self.failing.get(program) {
                return Err(match e {
                    Error::Privilege { .. } => Error::Privilege { what: "attaching".into(), needed: "CAP_BPF" },
                    _ => Error::attach(target, ty.name(), "no such function"),
                });
            }
            self.alive.borrow_mut().push((program, target));
            Ok(FakeLink((program, target), self.alive.clone()))
        }
    }

    fn probe(name: &str) -> &'static ProbeSpec {
        PROBES.iter().find(|p| p.name == name).unwrap()
    }

    fn attach_error() -> Error {
        Error::attach("", "", "")
    }

    #[test]
    fn the_first_plan_that_works_wins_and_the_others_say_why_they_did_not() {
        let mut k = Fake::default();
        k.refused.insert(ProgType::Kprobe, "no kprobes here".into());
        k.failing.insert("bpfcap_open_fe", attach_error());
        let mut a = Attacher::new(vec![]);
        a.attach_probe(&mut k, probe("vfs_open")).unwrap();
        let st = &a.active[0];
        assert_eq!(st.mechanism, "tracepoint");
        assert_eq!(st.skipped.len(), 2);
        assert!(st.skipped[0].starts_with("kprobe: no kprobes here"), "{:?}", st.skipped);
        assert!(st.skipped[1].starts_with("fentry: ") && st.skipped[1].contains("no such function"));
        // A refused type costs no attach: only fentry's and the tracepoints' were tried.
        assert_eq!(k.attaches, 1 + st.attachments.len());
        assert_eq!(k.alive.borrow().len(), st.attachments.len());
    }

    #[test]
    fn a_plan_goes_on_without_an_optional_attachment_that_cannot_be_made() {
        // fentry needs no perf event; the rename watch's tracepoints do (refused
        // to CAP_BPF+CAP_PERFMON where perf_event_paranoid is 3).
        let mut k = Fake::default();
        k.refused.insert(ProgType::Kprobe, "no kprobes here".into());
        k.failing.insert("bpfcap_change_xtp", Error::Privilege { what: String::new(), needed: "CAP_SYS_ADMIN" });
        let mut a = Attacher::new(vec![]);
        a.attach_probe(&mut k, probe("vfs_open")).unwrap();
        assert_eq!(a.active[0].mechanism, "fentry");
        assert_eq!(a.active[0].attachments, [("bpfcap_open_fe", "vfs_open")]);
        let left_out = &a.active[0].left_out;
        assert_eq!(left_out.len(), 6, "{left_out:?}");
        assert!(
            left_out[0].starts_with("syscalls:sys_exit_rename: ") && left_out[0].contains("attaching needs"),
            "{left_out:?}"
        );
    }

    #[test]
    fn a_disabled_mechanism_is_skipped_and_said_so() {
        let mut k = Fake::default();
        let mut a = Attacher::new(vec!["kprobe".into(), "fentry".into()]);
        a.attach_probe(&mut k, probe("vfs_write")).unwrap();
        assert_eq!(a.active[0].mechanism, "tracepoint");
        assert_eq!(a.active[0].skipped, ["kprobe: disabled by configuration", "fentry: disabled by configuration"]);
    }

    #[test]
    fn a_plan_is_attached_whole_or_not_at_all() {
        // udp_send's kprobe plan has two programs: the second failing releases the first.
        let k = Fake::default();
        let udp = probe("udp_sendmsg");
        let kp = &udp.plans[0];
        assert!(kp.attach.len() >= 2);
        let (first, second) = (kp.attach[0], kp.attach[1]);
        assert_eq!(first.program, second.program); // (the same program on two functions)
        struct FailSecond(Fake, Attach);
        impl Kernel for FailSecond {
            type Link = FakeLink;
            fn refuses(&mut self, ty: ProgType) -> Option<String> {
                self.0.refuses(ty)
            }
            fn tracepoint_exists(&self, t: &str) -> bool {
                self.0.tracepoint_exists(t)
            }
            fn attach(&mut self, p: &'static str, ty: ProgType, t: &'static str) -> Result<FakeLink> {
                if t == self.1.target && ty == self.1.ty {
                    return Err(attach_error());
                }
                self.0.attach(p, ty, t)
            }
        }
        let mut k = FailSecond(k, second);
        let mut a = Attacher::new(vec![]);
        a.attach_probe(&mut k, udp).unwrap();
        assert_ne!(a.active[0].mechanism, "kprobe");
        assert!(!k.0.alive.borrow().contains(&(first.program, first.target)), "the half-attached plan was released");
    }

    #[test]
    fn shared_links_are_counted_and_detached_with_their_last_user() {
        // tcp_connect and tcp_close both fall back to sock:inet_sock_set_state.
        let mut k = Fake::default();
        let mut a = Attacher::new(vec!["kprobe".into(), "fentry".into()]);
        a.attach_probe(&mut k, probe("tcp_connect")).unwrap();
        a.attach_probe(&mut k, probe("tcp_close")).unwrap();
        assert_eq!((k.attaches, a.link_count(), k.alive.borrow().len()), (1, 1, 1));
        a.attach_probe(&mut k, probe("tcp_close")).unwrap(); // already attached: nothing happens
        assert_eq!(k.attaches, 1);
        a.detach("tcp_connect");
        assert_eq!(k.alive.borrow().len(), 1, "still used by tcp_close");
        a.detach("tcp_close");
        assert!(k.alive.borrow().is_empty());
    }

    #[test]
    fn when_nothing_works_the_error_names_every_plan_or_the_missing_privilege() {
        let mut k = Fake::default();
        for p in ["bpfcap_open_kp", "bpfcap_open_fe", "bpfcap_open_tp"] {
            k.failing.insert(p, attach_error());
        }
        let mut a = Attacher::new(vec![]);
        let e = a.attach_probe(&mut k, probe("vfs_open")).unwrap_err().to_string();
        for m in ["kprobe", "fentry", "tracepoint"] {
            assert!(e.contains(&format!("{m}: ")), "{e}");
        }
        assert!(a.active.is_empty() && k.alive.borrow().is_empty());
        k.failing.insert("bpfcap_open_fe", Error::Privilege { what: String::new(), needed: "" });
        assert!(matches!(a.attach_probe(&mut k, probe("vfs_open")), Err(Error::Privilege { .. })));
    }

    #[test]
    fn an_optional_tracepoint_the_kernel_lacks_is_left_out() {
        let optional: Vec<_> = PROBES
            .iter()
            .flat_map(|p| p.plans.iter().map(move |plan| (p, plan)))
            .flat_map(|(p, plan)| plan.attach.iter().filter(|a| a.optional).map(move |a| (p, plan, a)))
            .collect();
        let Some(&(p, plan, at)) = optional.first() else { return };
        let mut k = Fake::default();
        k.missing_tracepoints.insert(at.target);
        let others: Vec<_> = PROBES.iter().flat_map(|q| q.plans).map(|pl| pl.mechanism).collect();
        let disabled = others.into_iter().filter(|m| *m != plan.mechanism).map(String::from).collect();
        let mut a = Attacher::new(disabled);
        a.attach_probe(&mut k, p).unwrap();
        assert_eq!(a.active[0].attachments.len(), plan.attach.len() - 1);
        assert!(!a.active[0].attachments.contains(&(at.program, at.target)));
    }
}
