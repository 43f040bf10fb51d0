//! Interactive `ask`: `buntime run` on a terminal connects to its
//! sandbox's approver socket and turns each question into a prompt
//! (`allow read /data/x.csv? [y/N/a(lways)]`) on the terminal.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::audit::verb;

/// Keeps only printable characters: the subject comes from the sandbox and
/// must not drive the terminal.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(300)
        .collect()
}

/// Serves the approver socket at `sock` until the supervisor hangs up,
/// reading answers from the terminal (`/dev/tty`).
pub fn serve(sock: &Path) {
    let Ok(conn) = UnixStream::connect(sock) else {
        return;
    };
    let Ok(mut w) = conn.try_clone() else { return };
    let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return;
    };
    let Ok(tty_w) = tty.try_clone() else { return };
    let mut tty_r = BufReader::new(tty);
    let mut tty_w = tty_w;
    let mut always: HashSet<(String, String)> = HashSet::new();
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { break };
        let Ok(q) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let kind = q["kind"].as_str().unwrap_or_default().to_string();
        let subject = q["subject"].as_str().unwrap_or_default().to_string();
        let key = (kind.clone(), subject.clone());
        let allow = if always.contains(&key) {
            true
        } else {
            let _ = write!(
                tty_w,
                "buntime: allow {} {}? [y/N/a(lways)] ",
                verb(&kind),
                printable(&subject)
            );
            let _ = tty_w.flush();
            let mut answer = String::new();
            if tty_r.read_line(&mut answer).unwrap_or(0) == 0 {
                false
            } else {
                match answer.trim().to_ascii_lowercase().as_str() {
                    "y" | "yes" => true,
                    "a" | "always" => {
                        always.insert(key);
                        true
                    }
                    _ => false,
                }
            }
        };
        let reply = serde_json::json!({
            "id": q["id"],
            "result": if allow { "allow" } else { "deny" },
        });
        if w.write_all(format!("{reply}\n").as_bytes()).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_cannot_drive_the_terminal() {
        assert_eq!(printable("/x\x1b[2J\n"), "/x?[2J?");
        assert_eq!(verb("fs_read"), "read");
        assert_eq!(verb("net_connect"), "connect to");
    }
}
