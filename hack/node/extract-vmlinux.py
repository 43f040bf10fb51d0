#!/usr/bin/env python3
"""Extracts the uncompressed ELF vmlinux from a bzImage (xz or gzip payload).

QEMU boots an ELF vmlinux through its PVH entry point, skipping the
decompressor, which under TCG saves about 3 s a boot.
Usage: extract-vmlinux.py BZIMAGE OUT
"""
import gzip
import lzma
import sys
import zlib


def payloads(data):
    """Candidate decompressions, in the order of their magic in the file."""
    for magic, kind in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gz")):
        start = data.find(magic)
        while start != -1:
            try:
                if kind == "xz":
                    yield lzma.LZMADecompressor().decompress(data[start:])
                else:
                    yield zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[start:])
            except (lzma.LZMAError, zlib.error, gzip.BadGzipFile):
                pass
            start = data.find(magic, start + 1)


def main():
    src, out = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        data = f.read()
    for elf in payloads(data):
        if elf.startswith(b"\x7fELF"):
            with open(out, "wb") as f:
                f.write(elf)
            return 0
    print(f"extract-vmlinux: no xz/gzip ELF payload in {src}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
