"""GPU buffers: creation (counted), upload padded to 4-byte multiples, readback."""

from __future__ import annotations

import threading
import weakref

import numpy as np


def padded_size(nbytes: int, align: int = 4) -> int:
    """nbytes rounded up to a multiple of `align` (4 by default: WebGPU copies and bindings
    need it; 16 for buffers that kernels read as vec4), and at least `align`."""
    return max(align, (nbytes + align - 1) // align * align)


class BufferAllocator:
    """Creates buffers and counts them, so tests can prove an error path allocated nothing."""

    def __init__(self, device):
        self.device = device
        self.created = 0
        self._live = weakref.WeakSet()  # created here, not yet destroyed
        self._lock = threading.Lock()

    @property
    def live_bytes(self) -> int:
        """Bytes of GPU memory held by the live buffers created here."""
        with self._lock:
            return sum(int(b.size) for b in self._live)

    @property
    def live(self) -> int:
        """Buffers created here that are neither destroyed nor garbage-collected."""
        with self._lock:
            return len(self._live)

    def create(self, nbytes: int, usage, label: str, *, align: int = 4):
        """An uninitialized buffer of at least nbytes (rounded up to a multiple of align)."""
        buf = self.device.create_buffer(label=label, size=padded_size(nbytes, align), usage=usage)
        with self._lock:
            self.created += 1
            self._live.add(buf)
        return buf

    def upload(self, array: np.ndarray, usage, label: str, *, align: int = 4):
        """A buffer holding array's bytes, zero-padded to a multiple of align (4 or more)."""
        data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        buf = self.create(data.nbytes, usage | self._copy_dst(), label, align=align)
        whole = data.nbytes // 4 * 4
        if whole:
            self.device.queue.write_buffer(buf, 0, data[:whole])
        if data.nbytes != whole or data.nbytes == 0:
            tail = np.zeros(4, np.uint8)
            tail[: data.nbytes - whole] = data[whole:]
            self.device.queue.write_buffer(buf, whole, tail)
        return buf

    def read(self, buf, nbytes: int, dtype=np.float32) -> np.ndarray:
        """The first nbytes of buf as a flat array of dtype (waits for the GPU)."""
        size = padded_size(nbytes)
        raw = self.device.queue.read_buffer(buf, 0, size)
        return np.frombuffer(raw, dtype=np.uint8)[:nbytes].view(dtype).copy()

    def destroy(self, *buffers) -> None:
        """Free GPU memory now rather than at garbage collection (buffers created here; each
        once: a second call for the same buffer does nothing)."""
        for buf in buffers:
            if buf is None:
                continue
            with self._lock:
                live = buf in self._live
                self._live.discard(buf)
            if live:
                buf.destroy()

    def _copy_dst(self):
        import wgpu

        return wgpu.BufferUsage.COPY_DST
