"""The release: ``python -m build`` makes an sdist and a wheel that ``twine check`` accepts,
and the wheel installs and runs in a clean virtual environment, assets and ``py.typed`` included.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.integration


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_build_check_install_and_run(tmp_path: Path) -> None:
    # build from a copy: a build writes *.egg-info and build/ beside the sources
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "*.egg-info", "build", "dist", "_build", "__pycache__", ".*_cache",
        "node_modules", "results"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], cwd=tmp_path)
    wheel = next(dist.glob("flask_pine_ws-*.whl"))
    sdist = next(dist.glob("flask_pine_ws-*.tar.gz"))
    _run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
         cwd=tmp_path)

    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("py.typed", "static/viewer.js", "static/viewer.css", "static/viewer.html"):
        assert f"flask_pine_ws/{asset}" in names, asset
    with tarfile.open(sdist) as archive:
        members = {Path(m).relative_to(Path(m).parts[0]).as_posix()
                   for m in archive.getnames() if len(Path(m).parts) > 1}
    assert {"CHANGELOG.md", "LICENSE", "README.md", "setup.cfg",
            "flask_pine_ws/static/viewer.js"} <= members

    env_dir = tmp_path / "clean"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path)
    helped = _run([str(env_dir / "bin" / "flask-pine-ws"), "--help"], cwd=tmp_path)
    assert helped.startswith("usage: flask-pine-ws")
    # imported from the clean environment, not from the checkout
    shown = _run([str(python), "-c",
                  "import flask_pine_ws, importlib.resources as r; "
                  "print(flask_pine_ws.__file__); "
                  "print((r.files('flask_pine_ws') / 'static' / 'viewer.js').is_file())"],
                 cwd=tmp_path)
    location, has_assets = shown.split()
    assert location.startswith(str(env_dir)) and has_assets == "True"
