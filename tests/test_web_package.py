"""Tests of q4gsw.js as an npm package (src/q4gsw/web/static is the package folder): package.json
lists what bundles ship, `npm pack` packs exactly that, q4gsw.d.ts declares every export of
q4gsw.js and nothing else, and a web developer's code type-checks against it with tsc."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

import pytest

import q4gsw
from q4gsw.web.export import STATIC_FILES

from .test_web import _no_browser

STATIC = Path(str(files("q4gsw.web").joinpath("static")))
TYPES_CHECK = Path(__file__).parent / "web" / "types_check.ts"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _no_browser(f"no {name} on PATH (Debian: apt-get install nodejs npm)")
    return path


class TestPackageJson:
    def test_fields(self):
        """An ES module package of q4gsw's version, its entry q4gsw.js typed by q4gsw.d.ts, its
        files the modules and pages every bundle holds plus the types."""
        pkg = json.loads((STATIC / "package.json").read_text())
        assert (pkg["name"], pkg["version"], pkg["type"]) == ("q4gsw", q4gsw.__version__, "module")
        assert pkg["exports"]["."] == {"types": "./q4gsw.d.ts", "import": "./q4gsw.js"}
        assert sorted(pkg["files"]) == sorted([*STATIC_FILES, "q4gsw.d.ts"])

    def test_npm_pack(self):
        """`npm pack` (dry run, nothing fetched) packs exactly package.json's files."""
        done = subprocess.run([_tool("npm"), "pack", "--dry-run", "--json"], cwd=STATIC, capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, done.stderr
        packed = sorted(f["path"] for f in json.loads(done.stdout)[0]["files"])
        assert packed == sorted([*STATIC_FILES, "q4gsw.d.ts", "package.json"])


class TestTypes:
    def test_declares_every_export(self):
        """The names q4gsw.js exports (as node imports it) are the values q4gsw.d.ts declares."""
        script = f"const m = await import({json.dumps((STATIC / 'q4gsw.js').as_uri())}); console.log(JSON.stringify(Object.keys(m)))"
        done = subprocess.run([_tool("node"), "--input-type=module", "-e", script], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr
        declared = re.findall(r"^export (?:class|function|const|namespace) (\w+)", (STATIC / "q4gsw.d.ts").read_text(), re.M)
        assert sorted(set(declared)) == sorted(json.loads(done.stdout))

    def test_tsc(self, tmp_path):
        """tests/web/types_check.ts (a page's use of the API) compiles with `tsc --strict`
        against q4gsw.d.ts and @webgpu/types. Needs Q4GSW_NODE_TOOLS: a folder whose
        node_modules holds typescript and @webgpu/types (npm install --prefix DIR typescript
        @webgpu/types); nothing is downloaded here."""
        tools = os.environ.get("Q4GSW_NODE_TOOLS")
        if not tools:
            pytest.skip("Q4GSW_NODE_TOOLS is not set (a folder with node_modules/typescript and @webgpu/types)")
        modules = Path(tools) / "node_modules"
        (tmp_path / "node_modules").mkdir()
        (tmp_path / "node_modules" / "q4gsw").symlink_to(STATIC)
        (tmp_path / "node_modules" / "@webgpu").symlink_to(modules / "@webgpu")
        shutil.copy(TYPES_CHECK, tmp_path / "types_check.ts")
        (tmp_path / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
            "strict": True, "noEmit": True, "target": "es2022", "module": "esnext", "moduleResolution": "bundler",
            "lib": ["es2022", "dom"], "preserveSymlinks": True, "types": ["@webgpu/types"]}, "files": ["types_check.ts"]}))
        done = subprocess.run([_tool("node"), str(modules / "typescript" / "bin" / "tsc"), "-p", str(tmp_path)],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
