//! The requests a well-behaved worker makes through its `Client`: one
//! function per command, each printing `CMD SUBJECT ALLOW|DENY|ERROR ...`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use buntime_ipc::{Reply, Request, Response};

use crate::{escape, report, say, Worker};

/// `read:PATH`: FS_READ, then reads the fd the supervisor passed.
pub(crate) fn read(w: &mut Worker, rest: &str) {
    let r = w.request(&Request::FsRead {
        path: rest.as_bytes().to_vec(),
    });
    if report("read", rest, &r) {
        let mut s = Vec::new();
        let fd = r.ok().and_then(|r| r.fd);
        match fd.map(|fd| File::from(fd).read_to_end(&mut s)) {
            Some(Ok(_)) => say(&format!("read {rest} ALLOW {}", escape(&s))),
            Some(Err(e)) => say(&format!("read {rest} ERROR {e}")),
            None => say(&format!("read {rest} ERROR no fd")),
        }
    }
}

/// `write:PATH:DATA` (data in the request) or `wfd:PATH:DATA` (asks for a
/// writable fd and writes through it).
pub(crate) fn write(w: &mut Worker, cmd: &str, rest: &str) {
    let (path, data) = rest.split_once(':').unwrap_or((rest, ""));
    let inline = if cmd == "write" { data } else { "" };
    let r = w.request(&Request::FsWrite {
        path: path.as_bytes().to_vec(),
        data: inline.as_bytes().to_vec(),
    });
    if report(cmd, path, &r) {
        let fd = r.ok().and_then(|r| r.fd);
        match (cmd, fd) {
            ("wfd", Some(fd)) => match File::from(fd).write_all(data.as_bytes()) {
                Ok(()) => say(&format!("wfd {path} ALLOW wrote")),
                Err(e) => say(&format!("wfd {path} ERROR {e}")),
            },
            ("wfd", None) => say(&format!("wfd {path} ERROR no fd")),
            _ => say(&format!("write {path} ALLOW wrote")),
        }
    }
}

/// `list:PATH` and `exec:PROG`: the reply's data is the answer.
pub(crate) fn with_data(w: &mut Worker, cmd: &str, rest: &str) {
    let req = if cmd == "list" {
        Request::ListDir {
            path: rest.as_bytes().to_vec(),
        }
    } else {
        Request::Exec {
            argv: vec![rest.as_bytes().to_vec()],
        }
    };
    let r = w.request(&req);
    if report(cmd, rest, &r) {
        if let Ok(Response {
            reply: Reply::Allow { data, .. },
            ..
        }) = r
        {
            say(&format!("{cmd} {rest} ALLOW {}", escape(&data)));
        }
    }
}

/// `net:HOST:PORT:MSG`: sends MSG on the connection the supervisor passed,
/// prints the first line back.
pub(crate) fn net(w: &mut Worker, rest: &str) {
    let mut parts = rest.splitn(3, ':');
    let host = parts.next().unwrap_or("");
    let port = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let msg = parts.next().unwrap_or("");
    let subject = format!("{host}:{port}");
    let r = w.request(&Request::NetConnect {
        host: host.into(),
        port,
    });
    if report("net", &subject, &r) {
        match r.ok().and_then(|r| r.fd) {
            Some(fd) => {
                let mut s = std::net::TcpStream::from(fd);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.write_all(format!("{msg}\n").as_bytes());
                let mut line = String::new();
                let _ = BufReader::new(s).read_line(&mut line);
                say(&format!("net {subject} ALLOW {}", line.trim()));
            }
            None => say(&format!("net {subject} ERROR no fd")),
        }
    }
}

/// `stdout:TEXT`: a STDOUT message on the ring.
/// `stream:MS`: small STDOUT frames back to back for MS milliseconds (a
/// busy ring that asks for nothing), then how many.
pub(crate) fn stream(w: &mut Worker, rest: &str) {
    let until = std::time::Instant::now() + Duration::from_millis(rest.parse().unwrap_or(0));
    let mut sent = 0u64;
    while std::time::Instant::now() < until {
        let r = w
            .client()
            .and_then(|c| c.write_stdout(b".").map_err(|e| e.to_string()));
        if let Err(e) = r {
            return say(&format!("stream {rest} ERROR {e}"));
        }
        sent += 1;
    }
    say(&format!("stream {rest} DONE {sent}"));
}

pub(crate) fn stdout(w: &mut Worker, rest: &str) {
    match w.client().and_then(|c| {
        c.write_stdout(format!("{rest}\n").as_bytes())
            .map_err(|e| e.to_string())
    }) {
        Ok(()) => say(&format!("stdout {rest} ALLOW sent")),
        Err(e) => say(&format!("stdout {rest} DENY {e}")),
    }
}
