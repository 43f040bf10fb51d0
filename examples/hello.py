"""The smallest sandboxed script: `buntime run examples/hello.py`."""
import sys

print(f"hello from Python {sys.version_info.major}.{sys.version_info.minor} in a buntime sandbox")
