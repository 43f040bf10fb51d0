//! The command line parses as runc's does: the flags engines pass.

use std::path::PathBuf;

use clap::Parser;

use super::{Cli, Command};

fn parse(args: &[&str]) -> Cli {
    let mut argv = vec!["buntime-runc"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

#[test]
fn flags_after_id_parse() {
    match parse(&["create", "job", "--bundle", "/b"]).command {
        Command::Create(a) => {
            assert_eq!(a.container_id, "job");
            assert_eq!(a.bundle, PathBuf::from("/b"));
        }
        other => panic!("wrong command {other:?}"),
    }
}

#[test]
fn global_flags_keep_their_defaults() {
    let cli = parse(&["state", "x"]);
    assert_eq!(
        cli.global.root,
        Some(PathBuf::from(buntime::runtime::DEFAULT_ROOT))
    );
    assert_eq!(cli.global.log_format.as_deref(), Some("text"));
    assert!(cli.global.log.is_none());
    let cli = parse(&[
        "--root",
        "/r",
        "--log",
        "/l",
        "--log-format",
        "json",
        "--systemd-cgroup",
        "--debug",
        "--rootless",
        "true",
        "--criu",
        "criu",
        "state",
        "x",
    ]);
    assert_eq!(cli.global.root, Some(PathBuf::from("/r")));
    assert_eq!(cli.global.log_format.as_deref(), Some("json"));
    assert!(cli.global.systemd_cgroup && cli.global.debug);
}

#[test]
fn an_empty_id_reaches_the_runtime() {
    // runc's error for it is the runtime's, not a usage error.
    for cmd in [
        "create", "start", "state", "delete", "run", "ps", "pause", "resume",
    ] {
        let cli = parse(&[cmd, ""]);
        assert!(
            format!("{:?}", cli.command).contains("container_id: \"\""),
            "{cmd}"
        );
    }
}

#[test]
fn runc_create_and_run_flags() {
    let cli = parse(&[
        "run",
        "-b",
        "/b",
        "--pid-file",
        "/p",
        "--console-socket",
        "/s",
        "--preserve-fds",
        "2",
        "--no-pivot",
        "--no-new-keyring",
        "--no-subreaper",
        "--keep",
        "-d",
        "job",
    ]);
    match cli.command {
        Command::Run(a) => {
            assert!(a.detach && a.keep && a.no_pivot && a.no_subreaper);
            assert_eq!(a.preserve_fds, 2);
            assert_eq!(a.pid_file, Some(PathBuf::from("/p")));
        }
        other => panic!("wrong command {other:?}"),
    }
}

#[test]
fn kill_defaults_to_sigterm_and_list_takes_dash_f() {
    match parse(&["kill", "job"]).command {
        Command::Kill(a) => assert_eq!(a.signal, "SIGTERM"),
        other => panic!("wrong command {other:?}"),
    }
    match parse(&["list", "-f", "json", "-q"]).command {
        Command::List(a) => assert!(a.format == "json" && a.quiet),
        other => panic!("wrong command {other:?}"),
    }
}

#[test]
fn spec_takes_explain_and_bundle() {
    match parse(&["spec", "--rootless", "-b", "/b"]).command {
        Command::Spec(a) => {
            assert!(a.oci.rootless && a.explain.is_none());
            assert_eq!(a.oci.bundle, Some(PathBuf::from("/b")));
        }
        other => panic!("wrong command {other:?}"),
    }
    match parse(&["spec", "--explain", "job"]).command {
        Command::Spec(a) => assert_eq!(a.explain.as_deref(), Some("job")),
        other => panic!("wrong command {other:?}"),
    }
}

#[test]
fn ps_and_exec_pass_their_trailing_arguments() {
    match parse(&["ps", "job", "-o", "pid"]).command {
        Command::Ps(a) => assert_eq!(a.ps_options, ["-o", "pid"]),
        other => panic!("wrong command {other:?}"),
    }
    let cli = parse(&["exec", "-e", "A=1", "-u", "1:2", "job", "ls", "-l"]);
    assert!(format!("{:?}", cli.command).contains("command: [\"ls\", \"-l\"]"));
}

#[test]
fn checkpoint_and_restore_take_runcs_flags() {
    parse(&[
        "checkpoint",
        "--image-path",
        "/i",
        "--manage-cgroups-mode",
        "x",
        "job",
    ]);
    parse(&["restore", "-b", "/b", "--lsm-profile", "p", "-d", "job"]);
}

#[test]
fn the_command_line_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}
