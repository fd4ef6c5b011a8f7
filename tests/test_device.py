"""Tests of q4gsw.runtime.device: Capabilities (pure) and the memoized runtime."""

from __future__ import annotations

import dataclasses

import pytest

import q4gsw

from .utils import fake_capabilities


def caps(adapter_name="llvmpipe (LLVM 15.0.6, 256 bits)", driver="Mesa 25.0.7 (LLVM 15.0.6)", **changes):
    """A hand-built Capabilities with only timestamp-query among the optional features."""
    return fake_capabilities(adapter_name, driver, features=frozenset({"timestamp-query"}), **changes)


class TestCapabilities:
    @pytest.mark.parametrize("adapter_name,driver,limited", [
        ("llvmpipe (LLVM 15.0.6, 256 bits)", "Mesa 22.3.6 (LLVM 15.0.6)", True),
        ("llvmpipe (LLVM 15.0.6, 256 bits)", "Mesa 24.2.8-1 (LLVM 15.0.6)", True),
        ("llvmpipe (LLVM 15.0.6, 256 bits)", "Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)", False),
        ("llvmpipe (LLVM 19.1.0, 256 bits)", "Mesa 26.1.0", False),
        ("NVIDIA H100", "Mesa 22.3.6", False),
        ("llvmpipe (LLVM 15.0.6, 256 bits)", "unknown driver", False),
    ])
    def test_has_loop_limit(self, adapter_name, driver, limited):
        """Only llvmpipe of Mesa older than 25 is marked as cutting long loops."""
        assert caps(adapter_name, driver).has_loop_limit is limited

    def test_mesa_version(self):
        """mesa_version parses (major, minor) from the driver string, None when not Mesa."""
        assert caps(driver="Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)").mesa_version == (25, 0)
        assert caps(driver="NVIDIA 550.54").mesa_version is None

    def test_limits_and_features(self):
        """The limit and feature properties read the recorded dicts."""
        c = caps()
        assert c.max_binding_size == 1 << 27 and c.max_workgroups_per_dimension == 65535
        assert c.has_timestamps and not c.has_f16 and not c.has_subgroups and c.is_cpu

    def test_frozen(self):
        """Capabilities cannot be changed in place; dataclasses.replace makes a changed copy."""
        c = caps()
        with pytest.raises(dataclasses.FrozenInstanceError):
            c.driver = "other"
        assert dataclasses.replace(c, driver="Mesa 22.0.1").has_loop_limit


class TestGetRuntime:
    def test_memoized(self, runtime):
        """get_runtime() returns the same Runtime every time, with its adapter's capabilities."""
        assert q4gsw.get_runtime() is runtime
        assert runtime.caps.adapter_name and runtime.caps.max_binding_size > 0
