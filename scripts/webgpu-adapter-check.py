"""Exit 0 when wgpu finds a usable adapter, 1 when it finds none, 2 for llvmpipe of Mesa < 25.

Used by the Makefile, which installs Mesa's Vulkan driver (scripts/install-webgpu-driver.sh)
only for exit 1; exit 2 is a warning. Prints what it found.
"""

import re
import sys

try:
    import wgpu

    adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
except Exception as exc:  # no Vulkan loader, no driver: wgpu-native raises or returns None
    print(f"no WebGPU adapter ({type(exc).__name__}: {exc})")
    sys.exit(1)
if adapter is None:
    print("no WebGPU adapter")
    sys.exit(1)
info = adapter.info
print(f"WebGPU adapter: {info['device']} ({info['adapter_type']}, {info['backend_type']}; {info['description']})")
mesa = re.search(r"Mesa (\d+)\.", info["description"])
if "llvmpipe" in info["device"] and mesa and int(mesa[1]) < 25:
    print("warning: llvmpipe older than Mesa 25 cuts long shader loops silently; q4gsw routes around it, "
          "but Mesa 25 is preferred: on Debian 12, scripts/install-webgpu-driver.sh (as root) installs it "
          "from bookworm-backports")
    sys.exit(2)
sys.exit(0)
