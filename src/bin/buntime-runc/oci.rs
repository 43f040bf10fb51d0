//! liboci-cli's arguments in buntime-runc's words.
//!
//! The structs are youki's, so the flags are runc's; their help is youki's
//! and in places says what buntime does not do (`--no-new-keyring` makes
//! no keyring here, it is accepted for runc compatibility). Each argument
//! is given buntime-runc's own help and place back, so `--help` reads as
//! before, and youki's short forms that runc lacks (`-r`, `-p`, ...) go.
//! Container ids are taken as any string: liboci-cli refuses ""
//! while parsing (a usage error, exit 2) where runc, and so buntime-runc,
//! gives the runtime's "invalid container id" error (exit 1).

use clap::builder::ValueParser;
use clap::Arg;

/// buntime-runc's help for liboci-cli's arguments, in the order of `--help`.
const WORDS: &[(&str, &str)] = &[
    ("root", "Root directory for container state"),
    ("log", "Write logs to FILE (default: stderr)"),
    ("log_format", "Log format: text or json"),
    ("systemd_cgroup", "Manage cgroups through systemd"),
    ("debug", "Log debug output"),
    ("format", "table or json (a list of pids)"),
    (
        "force",
        "Kill a running container first; a missing one is not an error",
    ),
    ("bundle", "Bundle directory (holding config.json)"),
    ("pid_file", "Write the init pid to FILE"),
    ("console_socket", "Unix socket to receive the pty master on"),
    (
        "preserve_fds",
        "Pass N more file descriptors (from fd 3) to the container",
    ),
    ("no_pivot", "Use chroot instead of pivot_root"),
    ("no_new_keyring", "Accepted for runc compatibility"),
    ("detach", "Return after starting the container"),
    ("keep", "Keep the container after it exits"),
    ("no_subreaper", "Accepted for runc compatibility"),
];

/// For `Command::mut_args` on a liboci-cli command.
pub fn words(a: Arg) -> Arg {
    let a = match a.get_id().as_str() {
        "container_id" => {
            return a
                .value_parser(ValueParser::string())
                .value_name("ID")
                .help("Container id")
        }
        "ps_options" => return a.help("Options passed to ps(1) (default -ef)"),
        "root" => a.default_value(buntime::runtime::DEFAULT_ROOT).short(None),
        // youki's short forms; runc has none.
        "log" | "systemd_cgroup" | "pid_file" | "console_socket" => a.short(None),
        "log_format" => a.default_value("text"),
        _ => a,
    };
    match WORDS.iter().position(|(id, _)| a.get_id() == *id) {
        Some(i) => a.help(WORDS[i].1).display_order(i),
        None => a,
    }
}

/// For `spec`, whose `--bundle` is where config.json goes.
pub fn spec_words(a: Arg) -> Arg {
    match a.get_id().as_str() {
        "bundle" => a
            .help("Directory to write config.json in")
            .default_value(".")
            .display_order(0),
        "rootless" => a
            .help("Write a spec for a rootless container")
            .display_order(1),
        _ => a,
    }
}
