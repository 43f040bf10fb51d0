#!/usr/bin/env python3
"""Makes an OCI image archive from a root filesystem, offline.

Usage: make-oci-archive.py ROOTFS IMAGE-NAME OUT.tar [CMD...]

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/)
in a tar, with one uncompressed layer (ROOTFS as it is), for
`ctr image import OUT.tar` (the name comes from the index's
io.containerd.image.name annotation) or `podman load -i OUT.tar`.
CMD defaults to sh.
"""
import hashlib
import io
import json
import os
import sys
import tarfile


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    rootfs, name, out = sys.argv[1], sys.argv[2], sys.argv[3]
    cmd = sys.argv[4:] or ["sh"]
    blobs = {}

    def add(data, media_type):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for entry in sorted(os.listdir(rootfs)):
            t.add(os.path.join(rootfs, entry), arcname=entry,
                  filter=lambda i: (setattr(i, "uname", "") or setattr(i, "gname", "") or i))
    layer = layer_buf.getvalue()
    layer_desc = add(layer, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = add(json.dumps(config, sort_keys=True).encode(),
                      "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = add(json.dumps(manifest, sort_keys=True).encode(),
                        "application/vnd.oci.image.manifest.v1+json")
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    manifest_desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": tag,
    }
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [manifest_desc]}

    def put(t, path, data):
        info = tarfile.TarInfo(path)
        info.size = len(data)
        info.mode = 0o644
        t.addfile(info, io.BytesIO(data))

    with tarfile.open(out, mode="w") as t:
        put(t, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        put(t, "index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            put(t, "blobs/sha256/" + digest.split(":", 1)[1], data)


if __name__ == "__main__":
    main()
