"""The sandbox at work: what the policy allows works, the rest is refused
with a reason. `make run` runs it as

    buntime run --allow-net=127.0.0.1:8765 examples/showcase.py

(the default policy, plus one host: a local server `make run` starts).
An argument names another port for that server (tests/learn_cli.rs).
"""
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8765


def show(what: str, action: Callable[[], str]) -> None:
    try:
        print(f"  ok      {what}: {action()}")
    except subprocess.CalledProcessError as e:
        print(f"  refused {what}: exit {e.returncode}: {e.stderr.strip()}")
    except urllib.error.HTTPError as e:
        print(f"  refused {what}: HTTP {e.code}: {e.headers.get('X-Buntime-Deny')}")
    except OSError as e:
        print(f"  refused {what}: {e.strerror or e}")


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()[:60] or "(empty)"


def write(path: str) -> str:
    with open(path, "w") as f:
        f.write("data\n")
    return f"wrote {path}"


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return f"HTTP {r.status}, {len(r.read())} bytes"


def direct(host: str, port: int) -> str:
    socket.create_connection((host, port), timeout=5).close()
    return "connected"


def run(argv: list) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


print("files")
show("read the script's own data", lambda: read(os.path.join(HERE, "data/greeting.txt")))
show("read /etc/shadow", lambda: read("/etc/shadow"))
show("read /root/.bash_history", lambda: read("/root/.bash_history"))
show("write /tmp/out.txt", lambda: write("/tmp/out.txt"))
show("write /etc/motd", lambda: write("/etc/motd"))
print("network")
show(f"GET http://127.0.0.1:{PORT}/ (allowed host)", lambda: fetch(f"http://127.0.0.1:{PORT}/data/greeting.txt"))
show("GET http://example.com/ (not allowed)", lambda: fetch("http://example.com/"))
show("connect 192.0.2.1:443 around the proxy", lambda: direct("192.0.2.1", 443))
print("processes")
show("run id", lambda: run(["id", "-un"]))
show("run mount", lambda: run(["mount", "-t", "tmpfs", "x", "/tmp"]))
