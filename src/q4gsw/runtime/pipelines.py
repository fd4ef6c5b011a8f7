"""KernelKey and the per-device pipeline cache; WGSL is read from q4gsw/kernels/*.wgsl."""

from __future__ import annotations

import dataclasses
import importlib.resources
import threading

from ..errors import ShaderError


@dataclasses.dataclass(frozen=True)
class KernelKey:
    """A compiled kernel: its name, override constants and .wgsl files.

    `files` (without extension) are concatenated in order; the entry file holds `main`, later
    ones supply what it leaves to them (see decode.wgsl; naga needs overrides declared before
    the declarations that use them, so the entry file comes first). A file of directives and
    type aliases without overrides may precede it (kv_f16.wgsl: WGSL wants `enable f16;`
    before every declaration).
    Default: the single file `name`. str(key) is the pipeline label, e.g.
    'linear_q4gsw/general[HAS_BIAS=1,WG=64]'; `label` (without constants) is the
    profiler's row name.
    """

    name: str
    constants: tuple = ()
    family: str = "linear_q4gsw"
    files: tuple = ()

    @property
    def sources(self) -> tuple:
        return self.files or (self.name,)

    @property
    def label(self) -> str:
        return f"{self.family}/{self.name}"

    def __str__(self) -> str:
        consts = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in self.constants)
        return f"{self.label}[{consts}]" if consts else self.label


def load_wgsl(name: str) -> str:
    """The text of q4gsw/kernels/<name>.wgsl."""
    return importlib.resources.files("q4gsw.kernels").joinpath(f"{name}.wgsl").read_text()


class PipelineCache:
    """Compute pipelines of one device, compiled once per KernelKey."""

    def __init__(self, device):
        self.device = device
        self._pipelines: dict[KernelKey, object] = {}
        self._lock = threading.Lock()

    def get(self, key: KernelKey):
        with self._lock:
            pipeline = self._pipelines.get(key)
            if pipeline is None:
                pipeline = self._pipelines[key] = self._compile(key)
            return pipeline

    def __len__(self) -> int:
        return len(self._pipelines)

    def _compile(self, key: KernelKey):
        import wgpu

        source = "\n".join(load_wgsl(f) for f in key.sources)
        constants = {k: float(v) for k, v in key.constants}
        try:
            module = self.device.create_shader_module(label=str(key), code=source)
            return self.device.create_compute_pipeline(
                label=str(key),
                layout="auto",
                compute={"module": module, "entry_point": "main", "constants": constants},
            )
        except wgpu.GPUError as exc:
            files = " + ".join(f"q4gsw/kernels/{f}.wgsl" for f in key.sources)
            raise ShaderError(f"kernel {key} ({files}) failed to compile:\n{exc}") from exc
