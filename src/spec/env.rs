//! A container process's environment: the env rules and the proxy
//! variables, for init ([`super::translate`]) and every `exec`.

use super::DEFAULT_PATH;
use crate::policy::{NetMode, Policy};

/// Keep environment entries whose names the policy passes, then apply the
/// fixed ones. Order: passed variables in input order, then fixed ones
/// sorted by name.
pub fn filter_env(policy: &Policy, vars: &[(String, String)]) -> Vec<String> {
    let env = &policy.env;
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in vars {
        if env.set.keys().any(|n| n.as_str() == k) || out.iter().any(|(ok, _)| ok == k) {
            continue;
        }
        if env.pass.iter().any(|p| p.matches(k)) {
            out.push((k.clone(), v.clone()));
        }
    }
    for (k, v) in &env.set {
        out.push((k.as_str().to_string(), v.clone()));
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The environment of a container process: `vars` through the policy's
/// env rules, then (in proxy mode) the proxy variables. Init's
/// ([`super::effective_spec`]) and every exec'd process's (`runtime::exec`) are
/// made here, so the two cannot drift apart.
pub fn process_env(
    policy: &Policy,
    vars: &[(String, String)],
    proxy_port: Option<u16>,
) -> Vec<String> {
    let mut env = filter_env(policy, vars);
    match (policy.network.mode, proxy_port) {
        (NetMode::Proxy, Some(port)) => set_proxy_env(&mut env, port, true),
        // The pod's loopback is its containers': reached through the proxy
        // (which connects in the pod's namespace) when the policy names
        // it, directly only on the ports Landlock opens.
        (NetMode::Pod, Some(port)) => set_proxy_env(&mut env, port, false),
        _ => {}
    }
    env
}

/// Points every common HTTP client at the proxy (curl, pip, npm, Python's
/// urllib, Bun and Node read one spelling or the other); loopback stays
/// direct when `loopback_direct`. Replaces whatever the caller set for
/// these names.
fn set_proxy_env(env: &mut Vec<String>, port: u16, loopback_direct: bool) {
    env.retain(|e| {
        let name = e.split('=').next().unwrap_or_default();
        !PROXY_NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
            && !name.eq_ignore_ascii_case("NO_PROXY")
    });
    env.extend(proxy_vars(port, loopback_direct));
}

const PROXY_NAMES: [&str; 3] = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"];

/// The proxy variables for a proxy on 127.0.0.1:`port`, both spellings
/// (`buntime run --learn` sets them for its learning proxy too).
pub fn proxy_vars(port: u16, loopback_direct: bool) -> Vec<String> {
    let url = format!("http://127.0.0.1:{port}");
    let mut env = Vec::new();
    for n in PROXY_NAMES {
        env.push(format!("{n}={url}"));
        env.push(format!("{}={url}", n.to_ascii_lowercase()));
    }
    if loopback_direct {
        env.push("NO_PROXY=localhost,127.0.0.1".into());
        env.push("no_proxy=localhost,127.0.0.1".into());
    }
    env
}

/// `KEY=VALUE` entries as pairs (an entry without `=` is a name with an
/// empty value).
pub fn split_env(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}
