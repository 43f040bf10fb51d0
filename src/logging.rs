//! Logging set-up shared by the binaries.
//!
//! `buntime-runc --log FILE --log-format json` must write what containerd and
//! conmon read back: one `{"level":"error","msg":"…","time":"…"}` object per
//! line (logrus' shape, which runc uses). The text format mirrors logrus'
//! `time="…" level=error msg="…"` lines.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// Parses the `--log-format` value; errors name the argument.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "invalid --log-format {other:?}: expected \"text\" or \"json\""
            )),
        }
    }
}

/// Where the lines go: a file (append) or stderr.
enum Sink {
    File(Mutex<File>),
    Stderr,
}

/// Which events a [`RuncLogLayer`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFilter {
    /// runc's: warnings and errors of our own targets, or (`--debug`)
    /// everything.
    Runc { debug: bool },
    /// `BUNTIME_LOG`'s directives (the supervisor under `buntime run`).
    Targets(TargetLevels),
}

impl LogFilter {
    fn enabled(&self, target: &str, level: &Level) -> bool {
        match self {
            // libcontainer logs its own view of every failure at error
            // level; runc users expect one line naming the problem, which
            // the CLI writes itself, so library chatter is kept to debug
            // runs.
            Self::Runc { debug: true } => *level <= Level::DEBUG,
            Self::Runc { debug: false } => *level <= Level::WARN && is_own_target(target),
            Self::Targets(t) => t.enabled(target, level),
        }
    }
}

/// A `BUNTIME_LOG` value read without tracing-subscriber's `EnvFilter`
/// (whose regex engine and span machinery the small supervisor binary
/// leaves out): its `LEVEL` and `TARGET=LEVEL` directives, comma-separated,
/// the longest matching target prefix deciding and the later of two equal
/// ones, as in `EnvFilter`; span and field directives are ignored, and so is
/// anything it cannot parse. Unlike `EnvFilter`, our own targets keep their
/// warnings unless a directive names them or the level is `off` (a failed
/// audit write must show under `BUNTIME_LOG=cli=debug` too), and other
/// targets their errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLevels {
    /// `None` is `off`.
    default: Option<Level>,
    targets: Vec<(String, Option<Level>)>,
}

impl TargetLevels {
    pub fn parse(value: &str) -> Self {
        let mut default = Some(Level::ERROR);
        let mut targets = Vec::new();
        for d in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match d.split_once('=') {
                Some((t, l)) if !t.contains(['[', '{']) && !t.trim().is_empty() => {
                    if let Some(l) = parse_level(l) {
                        targets.push((t.trim().to_string(), l));
                    }
                }
                Some(_) => {}
                None => match parse_level(d) {
                    Some(l) => default = l,
                    // A bare target enables all its levels (EnvFilter's rule).
                    None if !d.contains(['[', '{']) => {
                        targets.push((d.to_string(), Some(Level::TRACE)))
                    }
                    None => {}
                },
            }
        }
        // Longest first: the most specific directive decides; of two for
        // the same target the later (a stable sort of the reversed list).
        targets.reverse();
        targets.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Self { default, targets }
    }

    pub fn enabled(&self, target: &str, level: &Level) -> bool {
        let max = self
            .targets
            .iter()
            .find(|(t, _)| target.starts_with(t.as_str()))
            .map_or_else(|| self.unnamed(target), |(_, l)| *l);
        max.is_some_and(|max| *level <= max)
    }
}

impl TargetLevels {
    /// The level of a target no directive names: the default (`off` is
    /// off), and never below warnings for our own.
    fn unnamed(&self, target: &str) -> Option<Level> {
        match self.default {
            Some(d) if is_own_target(target) => Some(d.max(Level::WARN)),
            d => d,
        }
    }
}

/// `Some(None)` is `off`; `None` is not a level (tracing's own parser,
/// as `EnvFilter` reads a level).
fn parse_level(s: &str) -> Option<Option<Level>> {
    s.trim()
        .parse::<tracing::level_filters::LevelFilter>()
        .ok()
        .map(tracing::level_filters::LevelFilter::into_level)
}

/// A tracing layer that writes runc-style log lines.
pub struct RuncLogLayer {
    sink: Sink,
    format: LogFormat,
    filter: LogFilter,
}

impl RuncLogLayer {
    /// Opens `path` for appending (created if missing), or logs to stderr.
    pub fn new(path: Option<&Path>, format: LogFormat, filter: LogFilter) -> std::io::Result<Self> {
        let sink = match path {
            Some(p) => Sink::File(Mutex::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
            None => Sink::Stderr,
        };
        Ok(Self {
            sink,
            format,
            filter,
        })
    }

    fn render(&self, level: &Level, target: &str, fields: &FieldText) -> String {
        let mut msg = fields.message.clone();
        if !fields.extra.is_empty() {
            if !msg.is_empty() {
                msg.push(' ');
            }
            msg.push_str(&fields.extra);
        }
        runc_line(self.format, level, target, &msg)
    }
}

/// One log line as runc's logrus writes it: `time="…" level=error
/// msg="…"` (the message quoted) or `{"level":"error","msg":"…",…}`.
pub fn runc_line(format: LogFormat, level: &Level, target: &str, msg: &str) -> String {
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let level = level_name(level);
    match format {
        LogFormat::Json => {
            let line = serde_json::json!({
                "level": level,
                "msg": msg,
                "time": time,
                "target": target,
            });
            format!("{line}\n")
        }
        LogFormat::Text => format!("time=\"{time}\" level={level} msg={msg:?}\n"),
    }
}

/// Our own log targets: who speaks, as the brief names them.
fn is_own_target(target: &str) -> bool {
    matches!(target, "cli" | "supervisor" | "worker" | "audit") || target.starts_with("buntime")
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Collects an event's message and its other fields as `key=value` text.
#[derive(Default)]
struct FieldText {
    message: String,
    extra: String,
}

impl Visit for FieldText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.extra.is_empty() {
                self.extra.push(' ');
            }
            let _ = write!(self.extra, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl<S: Subscriber> Layer<S> for RuncLogLayer {
    // The filter looks at the target and level alone: decided once per call
    // site, so an event it drops (by default the audit's `info` event of
    // every broker decision) costs a load, not a dispatch. The filtering is
    // global: this layer is its subscriber's only one (`init_runc_logging`).
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.filter.enabled(meta.target(), meta.level()) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.filter.enabled(meta.target(), meta.level())
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !self.filter.enabled(meta.target(), meta.level()) {
            return;
        }
        let mut fields = FieldText::default();
        event.record(&mut fields);
        let line = self.render(meta.level(), meta.target(), &fields);
        match &self.sink {
            Sink::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
}

/// Installs the runc-style layer as the global subscriber.
pub fn init_runc_logging(
    path: Option<&Path>,
    format: LogFormat,
    filter: LogFilter,
) -> std::io::Result<()> {
    let layer = RuncLogLayer::new(path, format, filter)?;
    // Ignore a second initialisation (tests may call this more than once).
    let _ = tracing_subscriber::registry().with(layer).try_init();
    Ok(())
}

/// stderr for log lines, where a failed write is dropped: tracing's own
/// fallback on a write error is `eprintln!`, which panics on a closed pipe
/// (`buntime run … 2>&1 | head`), and a panic in the middle of a run would
/// leave its sandbox behind.
pub struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// A line on stderr for the user (like `eprintln!`, without the panic when
/// stderr is gone).
pub fn say(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e
        .write_all(line.as_bytes())
        .and_then(|()| e.write_all(b"\n"));
}

/// Plain stderr logging for the people-facing CLI, filtered by `BUNTIME_LOG`.
pub fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUNTIME_LOG")
        // libcontainer's own errors repeat ours at length; BUNTIME_LOG=debug
        // shows them.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,libcgroups=off,libcontainer=off")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| QuietStderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_runc_shape() {
        let layer = RuncLogLayer::new(None, LogFormat::Json, LogFilter::Runc { debug: false })
            .expect("layer");
        let fields = FieldText {
            message: "container \"x\" does not exist".into(),
            extra: String::new(),
        };
        let line = layer.render(&Level::ERROR, "buntime::cli", &fields);
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("json");
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"x\" does not exist");
        assert!(v["time"].as_str().is_some_and(|t| t.contains('T')));
    }

    #[test]
    fn buntime_log_directives_read_like_env_filter_with_our_warnings_kept() {
        let t = TargetLevels::parse("supervisor=debug");
        assert!(t.enabled("supervisor", &Level::DEBUG));
        assert!(!t.enabled("supervisor", &Level::TRACE));
        assert!(t.enabled("audit", &Level::WARN));
        assert!(!t.enabled("audit", &Level::INFO));
        let t = TargetLevels::parse("warn, libcontainer=off ,buntime=trace,buntime::x=info");
        assert!(t.enabled("cli", &Level::WARN) && !t.enabled("cli", &Level::INFO));
        assert!(!t.enabled("libcontainer::process", &Level::ERROR));
        assert!(t.enabled("buntime::supervisor", &Level::TRACE));
        assert!(!t.enabled("buntime::x::y", &Level::DEBUG));
        let t = TargetLevels::parse("debug,[span]=trace,nonsense=loud,proxy");
        assert!(t.enabled("anything", &Level::DEBUG) && !t.enabled("anything", &Level::TRACE));
        assert!(t.enabled("proxy", &Level::TRACE));
        assert!(!TargetLevels::parse("off").enabled("supervisor", &Level::ERROR));
        // Our own targets keep their warnings unless named (a failed audit
        // write shows under a CLI-only filter too); others their errors.
        let t = TargetLevels::parse("cli=debug");
        assert!(t.enabled("audit", &Level::WARN) && !t.enabled("audit", &Level::INFO));
        assert!(t.enabled("proxy", &Level::ERROR) && !t.enabled("proxy", &Level::WARN));
        assert!(!TargetLevels::parse("supervisor=error").enabled("supervisor", &Level::WARN));
        // The later of two directives for one target, trimmed.
        let t = TargetLevels::parse("supervisor=debug, supervisor = trace");
        assert!(t.enabled("supervisor", &Level::TRACE));
        assert!(!TargetLevels::parse("=debug").enabled("proxy", &Level::DEBUG));
    }

    #[test]
    fn runc_filter_keeps_library_chatter_to_debug() {
        let quiet = LogFilter::Runc { debug: false };
        assert!(quiet.enabled("supervisor", &Level::WARN));
        assert!(!quiet.enabled("supervisor", &Level::INFO));
        assert!(!quiet.enabled("libcontainer", &Level::ERROR));
        assert!(LogFilter::Runc { debug: true }.enabled("libcontainer", &Level::DEBUG));
    }

    #[test]
    fn log_format_names_the_flag() {
        let err = LogFormat::parse("xml").expect_err("must fail");
        assert!(err.contains("--log-format"));
    }
}
