#!/usr/bin/env bash
# Inside the node guest (its disk is a throw-away snapshot): installs the
# built buntime-runc (and buntime-supervisor beside it: `create` runs
# the supervisor from it), the shipped policies and the engine snippets the way
# README's installation does, for the podman and containerd sections.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${NODE_BIN:-target/debug}
install -m 0755 "$bin/buntime-runc" /usr/local/bin/buntime-runc
install -m 0755 "$bin/buntime-supervisor" /usr/local/bin/buntime-supervisor
install -d /etc/buntime/policies
for p in policies/*.json; do
  [ "$(basename "$p")" = schema.json ] || install -m 0644 "$p" /etc/buntime/policies/
done
install -m 0644 policies/default.json /etc/buntime/default.json
install -D -m 0644 integration/podman/containers.conf /etc/containers/containers.conf.d/buntime.conf
