#!/usr/bin/python3
"""Adds the host's python3 to a root filesystem, offline: the interpreter,
the libraries `ldd` lists for it and for the extension modules it loads,
and the standard library modules that importing MODULES loads (plus the
whole `encodings` package), at the host's paths.

Usage: python-rootfs.py ROOTFS [MODULE...]

Run with the host's /usr/bin/python3 (the interpreter copied is the one
running this script).
"""
import os
import shutil
import subprocess
import sys


def copy(src, rootfs):
    """Copies src (following links) to the same path under rootfs."""
    dst = os.path.join(rootfs, src.lstrip("/"))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if not os.path.exists(dst):
        shutil.copy2(os.path.realpath(src), dst)


def libraries(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            path = parts[parts.index("=>") + 1]
        else:
            path = parts[0] if parts else ""
        if path.startswith("/"):
            yield path


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rootfs, modules = sys.argv[1], sys.argv[2:]
    for m in modules:
        __import__(m)
    import encodings

    exe = os.path.realpath(sys.executable)
    binaries = [exe]
    files = {
        m.__file__
        for m in list(sys.modules.values())
        if getattr(m, "__file__", None) and m.__file__.startswith(sys.prefix + "/lib/")
    }
    enc_dir = os.path.dirname(encodings.__file__)
    files.update(os.path.join(enc_dir, f) for f in os.listdir(enc_dir) if f.endswith(".py"))
    for f in sorted(files):
        copy(f, rootfs)
        if f.endswith(".so"):
            binaries.append(f)
    for b in binaries:
        for lib in libraries(b):
            copy(lib, rootfs)
    copy(exe, rootfs)
    ver = "python%d.%d" % sys.version_info[:2]
    # The interpreter finds its platform libraries here (a warning otherwise).
    os.makedirs(os.path.join(rootfs, sys.prefix.lstrip("/"), "lib", ver, "lib-dynload"), exist_ok=True)
    link = os.path.join(rootfs, "usr/bin/python3")
    if not os.path.lexists(link):
        os.symlink(os.path.basename(exe), link)


if __name__ == "__main__":
    main()
