"""Tests of q4gsw.cli: bad values refused up front in one line, help text, exit statuses."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

from q4gsw import cli
from q4gsw.errors import Q4gswError

# (argv, the argument the error must name). In argv, {src} is a small valid safetensors
# checkpoint, {junk} a file of neither format, {bad_npz} a zip without the layer's arrays,
# {zip_junk} a file that starts like a zip but is not one, {tmp} the test's folder.
REFUSED = [
    # quantize
    (["quantize", "{src}", "{tmp}/nonexistent/dir/out.safetensors"], "OUT"),
    (["quantize", "{src}", "{tmp}"], "OUT"),
    (["quantize", "{src}", "{src}"], "OUT"),
    (["quantize", "{tmp}/missing.safetensors", "{tmp}/o.safetensors"], "IN"),
    (["quantize", "{tmp}", "{tmp}/o.safetensors"], "IN"),
    (["quantize", "{junk}", "{tmp}/o.safetensors"], "IN"),
    (["quantize", "{src}", "{tmp}/o.safetensors", "--group-size", "0"], "--group-size"),
    (["quantize", "{src}", "{tmp}/o.safetensors", "--group-size", "-32"], "--group-size"),
    (["quantize", "{src}", "{tmp}/o.safetensors", "--group-size", "1.5"], "--group-size"),
    (["quantize", "{src}"], "OUT"),
    # export-web
    (["export-web", "{tmp}/b", "--weight", "{tmp}/missing.npz"], "--weight"),
    (["export-web", "{tmp}/b", "--weight", "{src}"], "--weight"),
    (["export-web", "{tmp}/b", "--weight", "{bad_npz}"], "--weight"),
    (["export-web", "{tmp}/b", "--weight", "{zip_junk}"], "--weight"),
    (["export-web", "{tmp}/b", "--random", "512"], "--random"),
    (["export-web", "{tmp}/b", "--random", "0x64"], "--random"),
    (["export-web", "{tmp}/b", "--random", "64x-1"], "--random"),
    (["export-web", "{tmp}/b", "--random", "64x64x64"], "--random"),
    (["export-web", "{tmp}/b", "--group-size", "0"], "--group-size"),
    (["export-web", "{tmp}/b", "--seed", "-1"], "--seed"),
    (["export-web", "{src}/b"], "OUT_DIR"),
    # bench
    (["bench", "--kernels", "nope"], "--kernels"),
    (["bench", "--kernels", "tiled,nope"], "--kernels"),
    (["bench", "--kernels", "tiled,tiled"], "--kernels"),
    (["bench", "--kernels", ""], "--kernels"),
    (["bench", "--group-size", "0"], "--group-size"),
    (["bench", "--group-size", "abc"], "--group-size"),
    (["bench", "--shapes", "0x64x64"], "--shapes"),
    (["bench", "--shapes", "1x64x-64"], "--shapes"),
    (["bench", "--shapes", "1x64"], "--shapes"),
    (["bench", "--shapes", "1x64x64,"], "--shapes"),
    (["bench", "--shapes", "smal"], "--shapes"),
    (["bench", "--repeats", "0"], "--repeats"),
    (["bench", "--out", "{tmp}/nonexistent/run"], "--out"),
    (["bench", "--out", "{tmp}/"], "--out"),
    (["bench", "--plot", "{tmp}/nonexistent/r.png"], "--plot"),
    (["bench", "--plot", "{tmp}"], "--plot"),
    # tune
    (["tune", "--repeats", "0"], "--repeats"),
    (["tune", "--shapes", "1x0x64"], "--shapes"),
    (["tune", "--group-size", "-1"], "--group-size"),
    # demo
    (["demo", "--decode", "--tokens", "0"], "--tokens"),
    (["demo", "--layers", "0"], "--layers"),
    (["demo", "--layers", "-2"], "--layers"),
    (["demo", "--group-size", "0"], "--group-size"),
    (["demo", "--model", "minilm", "--decode"], "--decode"),
    (["demo", "--model", "llama"], "--model"),
    (["demo", "--quantizer", "awq"], "--quantizer"),
    (["demo", "--model", "minilm", "--dense-budget", "0.5"], "--dense-budget"),
    (["demo", "--model", "minilm", "--dense-budget", "nan"], "--dense-budget"),
    # no or unknown command
    ([], "COMMAND"),
    (["nope"], "COMMAND"),
]


class _NoRuntime:
    """Stands in for the process's Runtime: any use means a command started work it should not."""

    def __getattr__(self, name):
        raise AssertionError(f"the command reached the GPU runtime (.{name}) before refusing its input")


@pytest.fixture
def no_gpu(monkeypatch):
    """Make any use of the GPU runtime fail the test."""
    from q4gsw.runtime import device

    monkeypatch.setattr(device, "_runtime", _NoRuntime())


@pytest.fixture
def files(tmp_path):
    """The input files REFUSED refers to, by placeholder."""
    from safetensors.numpy import save_file

    src = tmp_path / "m.safetensors"
    save_file({"x.weight": np.ones((4, 64), np.float32)}, str(src))
    (tmp_path / "junk.bin").write_bytes(b"neither safetensors nor GGUF")
    np.savez(tmp_path / "bad.npz", a=np.zeros(3))
    (tmp_path / "zip_junk.npz").write_bytes(b"PK\x03\x04 then nothing a zip holds")
    return {"src": str(src), "junk": str(tmp_path / "junk.bin"), "bad_npz": str(tmp_path / "bad.npz"),
            "zip_junk": str(tmp_path / "zip_junk.npz"), "tmp": str(tmp_path)}


def run_refused(argv, capsys) -> str:
    """Run main(argv), check it refused the input in one line with status 2; return that line."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    assert err.endswith("\n") and len(err.splitlines()) == 1, err
    return err.rstrip("\n")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """{command: its parser}."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


class TestMain:
    @pytest.mark.parametrize("argv, argument", REFUSED, ids=[" ".join(a) or "(none)" for a, _ in REFUSED])
    def test_refuses_bad_value(self, argv, argument, files, capsys, no_gpu):
        """A bad value ends in one line naming the argument, status 2, before any work is done."""
        argv = [a.format(**files) for a in argv]
        line = run_refused(argv, capsys)
        command = argv[0] if argv and argv[0] in subparsers(cli.build_parser()) else None
        assert line.startswith(f"q4gsw {command}: " if command else "q4gsw: "), line
        assert f"argument {argument}" in line or f"arguments are required: {argument}" in line, line
        assert not os.path.exists(os.path.join(files["tmp"], "b")), "export-web created its folder"
        assert not os.path.exists(os.path.join(files["tmp"], "o.safetensors")), "quantize wrote"

    def test_says_what_was_expected(self, files, capsys, no_gpu):
        """The line says what was expected and what came, e.g. the kernel names to choose from."""
        line = run_refused(["bench", "--kernels", "nope"], capsys)
        assert "expected comma-separated kernel names from" in line and "rowwise" in line
        assert "got 'nope'" in line
        line = run_refused(["quantize", files["src"], "/nonexistent/dir/out.safetensors"], capsys)
        assert "/nonexistent/dir does not exist" in line

    def test_refuses_npz_without_layer(self, files, capsys, no_gpu):
        """An .npz lacking the layer's arrays is refused naming --weight and the missing keys."""
        line = run_refused(["export-web", files["tmp"] + "/b", "--weight", files["bad_npz"]], capsys)
        assert "argument --weight" in line and "group_size" in line

    @pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
    def test_refuses_unwritable_folder(self, files, tmp_path, capsys, no_gpu):
        """An output in a folder without write permission is refused up front."""
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            assert "argument OUT" in run_refused(["quantize", files["src"], str(locked / "o")], capsys)
            assert "argument OUT_DIR" in run_refused(["export-web", str(locked / "b")], capsys)
        finally:
            locked.chmod(0o700)

    def test_refuses_unwritable_tuning_cache(self, files, monkeypatch, capsys, no_gpu):
        """tune checks its cache folder ($Q4GSW_CACHE_DIR) before timing anything."""
        monkeypatch.setenv("Q4GSW_CACHE_DIR", os.path.join(files["src"], "cache"))
        assert "Q4GSW_CACHE_DIR" in run_refused(["tune", "--shapes", "1x64x64"], capsys)

    def test_plot_needs_matplotlib(self, tmp_path, monkeypatch, capsys, no_gpu):
        """--plot without matplotlib installed is refused before the benchmark runs."""
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        line = run_refused(["bench", "--plot", str(tmp_path / "r.png")], capsys)
        assert "argument --plot" in line and "matplotlib" in line

    @pytest.mark.parametrize("exc, code", [(KeyboardInterrupt(), 130), (OSError(28, "No space left on device"), 1),
                                           (Q4gswError("no adapter"), 2)])
    def test_failure_is_one_line(self, exc, code, monkeypatch, capsys):
        """Ctrl-C (130), an OS error (1) and a q4gsw error (2) while running end in one line."""
        def fail(args):
            raise exc

        monkeypatch.setattr(cli, "_info", fail)
        assert cli.main(["info"]) == code
        err = capsys.readouterr().err
        assert err.startswith("q4gsw info: ") and len(err.splitlines()) == 1 and "Traceback" not in err

    def test_help_lists_every_command(self, capsys):
        """`q4gsw --help` exits 0 and lists every command with its help line."""
        assert cli.main(["--help"]) == 0
        out = capsys.readouterr().out
        for name in subparsers(cli.build_parser()):
            assert f"    {name} " in out, name

    def test_import_loads_neither_torch_nor_wgpu(self):
        """Importing q4gsw.cli (and building its parser) imports neither torch nor wgpu."""
        code = ("import sys, q4gsw.cli; q4gsw.cli.build_parser().format_help(); "
                "print(sorted(m for m in ('torch', 'wgpu') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout
        assert out.strip() == "[]"

    def test_bench_runs(self, runtime, tmp_path, capsys):
        """A valid bench still runs and writes its results."""
        stem = str(tmp_path / "run")
        assert cli.main(["bench", "--shapes", "1x64x64", "--repeats", "2", "--kernels", "decode_subgroup",
                         "--out", stem]) == 0
        assert "decode_subgroup" in capsys.readouterr().out
        assert os.path.exists(stem + ".json") and os.path.exists(stem + ".md")


class TestBuildParser:
    def test_every_option_has_help_and_default(self):
        """Every argument has help; every option taking a value shows its default, through
        %(default)s when the default is a plain value (so the text cannot drift from it)."""
        parser = cli.build_parser()
        for name, sub in {"q4gsw": parser, **subparsers(parser)}.items():
            for action in sub._actions:
                if isinstance(action, argparse._SubParsersAction):
                    continue
                if isinstance(action, argparse._HelpAction):
                    continue
                where = f"{name} {action.option_strings or action.metavar}"
                assert action.help, where
                if not action.option_strings or action.nargs == 0:
                    continue  # positionals are required; flags are off unless given
                assert "default: " in action.help, where
                if isinstance(action.default, (str, int)):
                    assert "%(default)s" in action.help, where
            sub.format_help()  # every %(...)s expands

    def test_parses_values(self):
        """Valid values parse to what the commands take."""
        parse = cli.build_parser().parse_args
        args = parse(["bench", "--shapes", "1x64x64,8X128x256", "--kernels", "tiled, rowwise", "--repeats", "2"])
        assert args.shapes == [(1, 64, 64), (8, 128, 256)] and args.kernels == ["tiled", "rowwise"]
        assert args.repeats == 2 and args.group_size == 128
        small = parse(["tune"]).shapes
        assert small and all(len(s) == 3 and min(s) > 0 for s in small)
        args = parse(["export-web", "out", "--random", "64x96", "--random", "8X16"])
        assert args.random == [(64, 96), (8, 16)] and args.weight == [] and args.seed == 0
        args = parse(["demo", "--decode", "--tokens", "4"])
        assert (args.decode, args.tokens, args.layers, args.model) == (True, 4, 2, "llama-shaped")
