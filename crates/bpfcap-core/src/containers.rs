//! Containers that start after a `containerIds` filter was set: the internal
//! cgroup watch reports each new cgroup, and the filter gains the cgroups of
//! the containers it names.

use crate::{
    cgroups,
    event::{Event, FieldValue, Payload},
    filter::FilterSpec,
};

/// `(path, id, level)` of a cgroup v2 directory from a `cgroup:cgroup_mkdir` event.
pub fn created_cgroup(ev: &Event) -> Option<(String, u64, u32)> {
    let Payload::Probe(p) = &ev.payload else {
        return None;
    };
    let get = |name: &str| p.fields.iter().find(|(n, _)| &**n == name).map(|(_, v)| v);
    // root 0 is the cgroup v2 hierarchy; others are v1 controllers.
    if !matches!(get("root"), Some(FieldValue::Int(0))) {
        return None;
    }
    let Some(FieldValue::Str(path)) = get("path") else {
        return None;
    };
    let Some(FieldValue::UInt(id)) = get("id") else {
        return None;
    };
    let Some(FieldValue::Int(level)) = get("level") else {
        return None;
    };
    Some((path.clone(), *id, *level as u32))
}

/// `spec` with the cgroups (path, id, level) of newly created containers it
/// names added, or None when none of them is new to it.
pub fn with_new_containers(spec: &FilterSpec, created: &[(String, u64, u32)]) -> Option<FilterSpec> {
    let mut out = spec.clone();
    for (path, id, level) in created {
        let Some(cid) = cgroups::parse_path(path).container_id else {
            continue;
        };
        if spec.container_ids.iter().any(|want| cid.starts_with(want.as_str())) && !out.cgroups.contains(&(*id, *level))
        {
            out.cgroups.push((*id, *level));
        }
    }
    (out.cgroups.len() > spec.cgroups.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_filter_gains_the_cgroups_of_the_containers_it_names_once() {
        let spec = FilterSpec { container_ids: vec!["0123456789ab".into()], ..FilterSpec::default() };
        let mine = (format!("/system.slice/docker-{ID}.scope"), 77, 2);
        let other = (
            "/system.slice/docker-fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210.scope".into(),
            78,
            2,
        );
        let plain = ("/user.slice/user-0.slice".to_string(), 79, 2);
        let got = with_new_containers(&spec, &[mine.clone(), other, plain]).expect("a new cgroup");
        assert_eq!(got.cgroups, [(77, 2)]);
        assert!(with_new_containers(&got, &[mine]).is_none(), "already followed");
    }
}
