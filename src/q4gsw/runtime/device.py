"""Adapter choice and the lazily created device, with what it offers recorded in Capabilities."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import threading

import numpy as np

from ..errors import DeviceError
from .buffers import BufferAllocator
from .pipelines import PipelineCache
from .tuning_cache import read_cache
from .weights import WeightCache

log = logging.getLogger("q4gsw")

#: Optional features the kernels use, requested only when the adapter offers them.
WANTED_FEATURES = ("timestamp-query", "shader-f16", "subgroup")
#: Limits raised to the adapter's maxima.
RAISED_LIMITS = (
    "max-storage-buffer-binding-size",
    "max-buffer-size",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroup-size-x",
    "max-compute-workgroup-size-y",
    "max-compute-workgroup-size-z",
    "max-compute-workgroups-per-dimension",
    "max-storage-buffers-per-shader-stage",
    "max-uniform-buffer-binding-size",
)
#: A NaN whose bits say "unwritten": an output element no kernel wrote fails any comparison.
POISON = np.uint32(0x7FBADBAD)
INSTALL_HINT = (
    "no WebGPU adapter was found. On Debian/Ubuntu install a Vulkan driver, e.g. Mesa's CPU "
    "driver: apt-get install mesa-vulkan-drivers libvulkan1 (or run scripts/install-webgpu-driver.sh)"
)


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What the chosen adapter is and what the device was created with."""

    adapter_name: str
    vendor: str
    backend: str
    adapter_type: str
    driver: str
    features: frozenset
    limits: dict
    chosen_because: str
    #: the smallest subgroup the device may run: the subgroup size a probe kernel ran with
    #: (with the `subgroup` feature), else the adapter's reported minimum, else 4
    subgroup_min_size: int = 4

    @property
    def has_timestamps(self) -> bool:
        return "timestamp-query" in self.features

    @property
    def has_f16(self) -> bool:
        return "shader-f16" in self.features

    @property
    def has_subgroups(self) -> bool:
        return "subgroup" in self.features

    @property
    def max_binding_size(self) -> int:
        return int(self.limits["max-storage-buffer-binding-size"])

    @property
    def max_workgroups_per_dimension(self) -> int:
        return int(self.limits["max-compute-workgroups-per-dimension"])

    @property
    def is_cpu(self) -> bool:
        return self.adapter_type.lower() == "cpu"

    @property
    def mesa_version(self) -> tuple[int, int] | None:
        """(major, minor) when the driver is Mesa, else None."""
        match = re.search(r"Mesa (\d+)\.(\d+)", self.driver)
        return (int(match[1]), int(match[2])) if match else None

    @property
    def has_loop_limit(self) -> bool:
        """llvmpipe from Mesa older than 25 silently cuts loops past 65 535 iterations per invocation."""
        mesa = self.mesa_version
        return "llvmpipe" in self.adapter_name and mesa is not None and mesa < (25, 0)


def _choose_adapter(wgpu, selector: str | None, power_preference: str):
    """Return (adapter, reason). selector: None, 'cpu', 'gpu', an index, or part of the name."""
    if not selector:
        adapter = wgpu.gpu.request_adapter_sync(power_preference=power_preference)
        if adapter is None:
            raise DeviceError(INSTALL_HINT)
        return adapter, f"default adapter for power_preference={power_preference!r}"
    adapters = wgpu.gpu.enumerate_adapters_sync()
    if not adapters:
        raise DeviceError(INSTALL_HINT)
    names = [f"{i}: {a.info['device']} ({a.info['adapter_type']}, {a.info['backend_type']})" for i, a in enumerate(adapters)]
    sel = selector.strip().lower()
    if sel.isdigit() and int(sel) < len(adapters):
        return adapters[int(sel)], f"Q4GSW_ADAPTER={selector!r} picked index {sel}"
    for a in adapters:
        kind = a.info["adapter_type"].lower()
        if sel == "cpu" and kind == "cpu":
            return a, "Q4GSW_ADAPTER='cpu' picked the first CPU adapter"
        if sel == "gpu" and kind in ("discretegpu", "integratedgpu"):
            return a, "Q4GSW_ADAPTER='gpu' picked the first GPU adapter"
        if sel not in ("cpu", "gpu") and sel in a.info["device"].lower():
            return a, f"Q4GSW_ADAPTER={selector!r} matched the adapter name"
    raise DeviceError(f"Q4GSW_ADAPTER={selector!r} matches no adapter; adapters: " + "; ".join(names))


_SUBGROUP_PROBE = """
@group(0) @binding(0) var<storage, read_write> size: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) lanes: u32) {
  if (lid == 0u) { size[0] = lanes; }
}
"""


def _probe_subgroup_size(wgpu, device) -> int:
    """The subgroup size a 256-invocation compute pipeline runs with on this device. (Where a
    driver varies it between pipelines, kernels that size memory by it check it again.)"""
    usage = wgpu.BufferUsage
    pipeline = device.create_compute_pipeline(layout="auto", compute={
        "module": device.create_shader_module(label="q4gsw/subgroup-probe", code=_SUBGROUP_PROBE),
        "entry_point": "main"})
    out = device.create_buffer(size=4, usage=usage.STORAGE | usage.COPY_SRC)
    group = device.create_bind_group(layout=pipeline.get_bind_group_layout(0),
                                     entries=[{"binding": 0, "resource": {"buffer": out}}])
    encoder = device.create_command_encoder()
    cpass = encoder.begin_compute_pass()
    cpass.set_pipeline(pipeline)
    cpass.set_bind_group(0, group)
    cpass.dispatch_workgroups(1)
    cpass.end()
    device.queue.submit([encoder.finish()])
    lanes = int.from_bytes(bytes(device.queue.read_buffer(out)), "little")
    out.destroy()
    return lanes if lanes >= 1 else 4


class Runtime:
    """One device and what lives on it: capabilities, buffers, pipelines, the GPU copies of
    weights, the tuned kernel choices for this adapter, and the buffer read back to wait."""

    def __init__(self, selector: str | None = None, power_preference: str = "high-performance",
                 disable_features: tuple[str, ...] = ()):
        try:
            import wgpu
        except ImportError as exc:  # wgpu ships a native library; a broken install lands here
            raise DeviceError(f"wgpu could not be imported: {exc}") from exc
        self.wgpu = wgpu
        adapter, reason = _choose_adapter(wgpu, selector, power_preference)
        features = [f for f in WANTED_FEATURES if f in adapter.features and f not in disable_features]
        limits = {name: adapter.limits[name] for name in RAISED_LIMITS if name in adapter.limits}
        self.device = adapter.request_device_sync(
            label="q4gsw", required_features=features, required_limits=limits
        )
        info = adapter.info
        self.caps = Capabilities(
            adapter_name=info["device"],
            vendor=info["vendor"],
            backend=info["backend_type"],
            adapter_type=info["adapter_type"],
            driver=info["description"],
            features=frozenset(features),
            limits=dict(self.device.limits),
            chosen_because=reason + (f"; features disabled: {', '.join(disable_features)}" if disable_features else ""),
            # (wgpu-py 0.32 spells the key "stackgroup_min_size"; NVIDIA reports 4 there)
            subgroup_min_size=(_probe_subgroup_size(wgpu, self.device) if "subgroup" in features else
                               int(info.get("subgroup_min_size", info.get("stackgroup_min_size", 4)) or 4)),
        )
        self.lost = False
        self.buffers = BufferAllocator(self.device)
        self.pipelines = PipelineCache(self.device)
        self.weights = WeightCache(self)
        #: Fill every output buffer with a NaN pattern before its dispatch (tests set
        #: Q4GSW_POISON_OUTPUTS=1), so an element no kernel wrote fails any comparison.
        self.poison_outputs = os.environ.get("Q4GSW_POISON_OUTPUTS", "") not in ("", "0")
        self._tuned: dict | None = None
        self._sync_buffer = None
        self._read_bandwidth: float | None = None
        if self.caps.has_loop_limit:
            log.warning(
                "q4gsw: %s (%s) cuts shader loops past 65 535 iterations silently; q4gsw routes to "
                "kernels that stay within that budget, but install Mesa >= 25 for the baseline kernels",
                self.caps.adapter_name, self.caps.driver,
            )

    @contextlib.contextmanager
    def device_calls(self):
        """Turn wgpu's error for a lost device into DeviceError and mark this runtime lost,
        so that get_runtime() makes a new one on the next call."""
        try:
            yield
        except self.wgpu.GPUError as exc:
            if "lost" not in str(exc).lower():
                raise
            self.lost = True
            reason = next((line.strip() for line in str(exc).splitlines() if "lost" in line.lower()), "")
            raise DeviceError(f"the WebGPU device was lost ({reason}); the next call creates a new device "
                              f"(weights are uploaded again)") from exc

    @property
    def tuned(self) -> dict | None:
        """The tuning cache's entries for this adapter ({bucket: {"kernel", "settings"}}, see
        `q4gsw tune`), read once; None when Q4GSW_TUNE=0."""
        if os.environ.get("Q4GSW_TUNE", "1") == "0":
            return None
        if self._tuned is None:
            self._tuned = read_cache(self.caps)
        return self._tuned

    def forget_tuning(self) -> None:
        """Read the tuning cache again on next use (after `q4gsw tune` wrote it)."""
        self._tuned = None

    @property
    def sync_buffer(self):
        """A 4-byte buffer read back to wait for the GPU (see submit.wait)."""
        if self._sync_buffer is None:
            usage = self.wgpu.BufferUsage
            self._sync_buffer = self.buffers.create(4, usage.COPY_SRC | usage.COPY_DST, "q4gsw/sync")
        return self._sync_buffer

    def poison(self, buffer, count: int) -> None:
        """With poison_outputs, fill the first `count` 32-bit words of buffer with NaN."""
        if self.poison_outputs:
            self.device.queue.write_buffer(buffer, 0, np.full(count, POISON, np.uint32))

    def read_bandwidth(self) -> float:
        """The adapter's read bandwidth in bytes/s, measured once per runtime (see bandwidth.py)."""
        if self._read_bandwidth is None:
            from .bandwidth import measure_read_bandwidth

            self._read_bandwidth = measure_read_bandwidth(self).bytes_per_second
        return self._read_bandwidth


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's Runtime, created on first use (and again after its device was lost).

    Environment: Q4GSW_ADAPTER ('cpu', 'gpu', an index of `q4gsw info`'s list, or part of the
    adapter name), Q4GSW_POWER_PREFERENCE ('high-performance' or 'low-power'),
    Q4GSW_DISABLE_FEATURES (comma-separated features not to request, e.g. 'subgroup').
    """
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.lost:
            disabled = tuple(f.strip() for f in os.environ.get("Q4GSW_DISABLE_FEATURES", "").split(",") if f.strip())
            _runtime = Runtime(
                os.environ.get("Q4GSW_ADAPTER"),
                os.environ.get("Q4GSW_POWER_PREFERENCE", "high-performance"),
                disabled,
            )
        return _runtime


def reset_runtime(runtime: Runtime | None = None) -> None:
    """Replace the process's Runtime (None: the next get_runtime() creates a fresh one)."""
    global _runtime
    with _runtime_lock:
        _runtime = runtime
