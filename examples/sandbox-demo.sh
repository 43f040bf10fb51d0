#!/bin/sh
# Runs inside the sandbox: shows what the default policy allows and refuses.
echo "hello from the sandbox (pid $$, host name $(hostname))"
try() {
  label=$1; shift
  if out=$("$@" 2>&1); then echo "allowed: $label"; else echo "denied:  $label -> $out"; fi
}
try "read /etc/passwd" head -n1 /etc/passwd
try "write /tmp/note" sh -c 'echo hi > /tmp/note'
try "write /etc/evil" sh -c 'echo x > /etc/evil'
try "list /" ls /
echo "network interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
try "open an inet socket" nc -w1 127.0.0.1 9
try "mkdir under /tmp" mkdir /tmp/d
echo "capabilities: $(grep CapEff /proc/self/status)"
echo "seccomp mode: $(grep '^Seccomp:' /proc/self/status)"
