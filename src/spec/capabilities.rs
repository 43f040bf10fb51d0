//! `isolation.capabilities` applied to the bundle's capability sets: every
//! set keeps only what `keep` names (when given) and loses what `drop`
//! names. Nothing is ever added.

use libcontainer::oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::policy::{CapName, CapabilityRules};

/// The OCI capability of a policy name; `None` for a name the kernel knows
/// but the OCI types do not (it cannot be in a spec, so it cannot stay).
fn oci_capability(name: &CapName) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(name.kernel_name())).ok()
}

fn policy_name(cap: &Capability) -> Option<CapName> {
    let text = serde_json::to_value(cap).ok()?;
    CapName::new(text.as_str()?).ok()
}

/// Every capability this build knows, as OCI values.
fn all_capabilities() -> Capabilities {
    caps::all()
        .into_iter()
        .filter_map(|c| CapName::new(c.to_string()).ok())
        .filter_map(|n| oci_capability(&n))
        .collect()
}

/// Which set of the five.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Set {
    Bounding,
    Effective,
    Permitted,
    Inheritable,
    Ambient,
}

/// What the process gets for a set the bundle leaves out (libcontainer's
/// reading): no `capabilities` at all keeps root's full bounding,
/// effective and permitted sets; an absent bounding set inside one is
/// empty; absent effective and permitted sets keep what the process holds
/// (everything for uid 0, nothing after the switch to another uid);
/// inheritable and ambient start empty.
fn implied(set: Set, whole_absent: bool, root: bool) -> Capabilities {
    let full = match set {
        Set::Bounding => whole_absent,
        Set::Effective | Set::Permitted => root,
        Set::Inheritable | Set::Ambient => false,
    };
    if full {
        all_capabilities()
    } else {
        Capabilities::new()
    }
}

/// Each of the five sets as the process gets them (absent sets read as
/// libcontainer reads them, [`implied`]), by name: what `check_only_narrows`
/// compares, so a bundle without `capabilities` is not taken for one
/// without any.
pub fn held(c: Option<&LinuxCapabilities>, uid: u32) -> [(&'static str, Capabilities); 5] {
    let whole_absent = c.is_none();
    let get = |set: Set, given: Option<&Capabilities>| -> Capabilities {
        given
            .cloned()
            .unwrap_or_else(|| implied(set, whole_absent, uid == 0))
    };
    [
        (
            "bounding",
            get(Set::Bounding, c.and_then(|c| c.bounding().as_ref())),
        ),
        (
            "effective",
            get(Set::Effective, c.and_then(|c| c.effective().as_ref())),
        ),
        (
            "inheritable",
            get(Set::Inheritable, c.and_then(|c| c.inheritable().as_ref())),
        ),
        (
            "permitted",
            get(Set::Permitted, c.and_then(|c| c.permitted().as_ref())),
        ),
        (
            "ambient",
            get(Set::Ambient, c.and_then(|c| c.ambient().as_ref())),
        ),
    ]
}

/// The bundle's capabilities under `rules`. `bundle` is the process's
/// `capabilities` (`None`: the bundle sets none); `uid` the process's.
/// Returns `None` (the bundle's own) when the rules restrict nothing.
pub fn restrict(
    bundle: Option<&LinuxCapabilities>,
    rules: &CapabilityRules,
    uid: u32,
) -> Option<LinuxCapabilities> {
    if !rules.restricts() {
        return bundle.cloned();
    }
    let allowed = |c: &Capability| policy_name(c).is_some_and(|n| rules.allows(&n));
    let pick = |set: Set, given: Option<&Capabilities>| -> Capabilities {
        let base = match given {
            Some(s) => s.clone(),
            None => implied(set, bundle.is_none(), uid == 0),
        };
        base.into_iter().filter(allowed).collect()
    };
    let b = bundle;
    // `LinuxCapabilities::default()` holds runc's three defaults: every set
    // is overwritten below.
    let mut out = LinuxCapabilities::default();
    out.set_bounding(Some(pick(
        Set::Bounding,
        b.and_then(|c| c.bounding().as_ref()),
    )));
    out.set_effective(Some(pick(
        Set::Effective,
        b.and_then(|c| c.effective().as_ref()),
    )));
    out.set_permitted(Some(pick(
        Set::Permitted,
        b.and_then(|c| c.permitted().as_ref()),
    )));
    out.set_inheritable(Some(pick(
        Set::Inheritable,
        b.and_then(|c| c.inheritable().as_ref()),
    )));
    out.set_ambient(Some(pick(
        Set::Ambient,
        b.and_then(|c| c.ambient().as_ref()),
    )));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

    fn rules(src: &str) -> CapabilityRules {
        parse_policy(
            &format!(r#"{{"version":1,"isolation":{{"capabilities":{src}}}}}"#),
            "t",
        )
        .unwrap()
        .isolation
        .capabilities
    }

    fn set(names: &[Capability]) -> Capabilities {
        names.iter().copied().collect()
    }

    fn engine() -> LinuxCapabilities {
        let s = set(&[
            Capability::Chown,
            Capability::Setuid,
            Capability::NetBindService,
            Capability::SysAdmin,
        ]);
        let mut c = LinuxCapabilities::default();
        c.set_bounding(Some(s.clone()));
        c.set_effective(Some(s.clone()));
        c.set_permitted(Some(s));
        c.set_inheritable(None);
        c.set_ambient(None);
        c
    }

    #[test]
    fn no_rules_is_the_bundle() {
        let e = engine();
        assert_eq!(
            restrict(Some(&e), &CapabilityRules::default(), 0),
            Some(e.clone())
        );
        assert_eq!(restrict(None, &CapabilityRules::default(), 0), None);
    }

    #[test]
    fn keep_intersects_and_drop_removes_in_every_set() {
        let out = restrict(Some(&engine()), &rules(r#"{"keep":["CHOWN","KILL"]}"#), 0).unwrap();
        for s in [out.bounding(), out.effective(), out.permitted()] {
            assert_eq!(
                s.clone().unwrap(),
                set(&[Capability::Chown]),
                "KILL never added"
            );
        }
        assert_eq!(out.inheritable().clone().unwrap(), Capabilities::new());
        assert_eq!(out.ambient().clone().unwrap(), Capabilities::new());

        let out = restrict(Some(&engine()), &rules(r#"{"drop":["SYS_ADMIN"]}"#), 0).unwrap();
        assert_eq!(
            out.effective().clone().unwrap(),
            set(&[
                Capability::Chown,
                Capability::Setuid,
                Capability::NetBindService
            ])
        );
        let out = restrict(Some(&engine()), &rules(r#"{"keep":[]}"#), 0).unwrap();
        assert!(out.bounding().as_ref().unwrap().is_empty());
        assert!(out.permitted().as_ref().unwrap().is_empty());
    }

    #[test]
    fn absent_sets_are_read_as_the_kernel_would_give_them() {
        // No capabilities in the bundle: root would hold them all.
        let out = restrict(None, &rules(r#"{"drop":["SYS_ADMIN"]}"#), 0).unwrap();
        let eff = out.effective().clone().unwrap();
        assert!(eff.contains(&Capability::Chown) && !eff.contains(&Capability::SysAdmin));
        assert!(out.ambient().as_ref().unwrap().is_empty());
        // Another uid would hold nothing: nothing is given.
        let out = restrict(None, &rules(r#"{"drop":["SYS_ADMIN"]}"#), 1000).unwrap();
        assert!(out.effective().as_ref().unwrap().is_empty());
        assert!(out
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::Chown));
    }
}
