# Shared by hack/node/*.sh: where the guest image is cached.
# BUNTIME_NODE_DIR overrides the cache directory (default .build/node).
node_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
node_dir=${BUNTIME_NODE_DIR:-$node_repo/.build/node}
# The image is named by what it is built from: the package list, the build
# script and the guest's runner; any change makes a new one.
node_key=$(cat "$node_repo/hack/node/packages" "$node_repo/hack/node/build-image.sh" \
  "$node_repo/hack/node/guest-runner.sh" | sha256sum | cut -c1-16)
node_image=$node_dir/$node_key
