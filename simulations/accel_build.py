"""Build p2psim's compiled modules (see simulations/accel.py): ``make sim-accel``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from simulations.accel import (
    DEFAULT_DIR,
    MANIFEST,
    MODULES,
    REPO_ROOT,
    cache_tag,
    digest,
    source,
    stale_reason,
)

# mypyc type-checks what it compiles; the project's own mypy settings name packages
# that are not part of this build, which mypy reports as unused and mypyc as failure.
_MYPY_CONFIG = "[mypy]\nignore_missing_imports = True\n"
# Run in a child process: setuptools and the compiler print a lot, shown only on failure.
_SETUP = """\
import sys
from mypyc.build import mypycify
from setuptools import setup
config, scratch, out, *paths = sys.argv[1:]
setup(
    name="starling-sim-accel",
    script_args=["build_ext", "--build-lib", out, "--build-temp", scratch + "/temp"],
    ext_modules=mypycify(
        ["--config-file", config, *paths], opt_level="3", target_dir=scratch + "/c"
    ),
)
"""


def build(directory: Path = DEFAULT_DIR) -> float:
    """Compile ``MODULES`` into ``directory``; returns the seconds it took.

    Raises ``RuntimeError`` with the compiler's output when the build fails (no C
    compiler, no Python headers); ``directory`` then holds no usable build.
    """
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    sources = {module: digest(source(module)) for module in MODULES}
    with tempfile.TemporaryDirectory(prefix="sim-accel-") as scratch:
        config = Path(scratch) / "mypy.ini"
        config.write_text(_MYPY_CONFIG)
        paths = [str(source(module).relative_to(REPO_ROOT)) for module in MODULES]
        done = subprocess.run(
            [sys.executable, "-c", _SETUP, str(config), scratch, str(directory), *paths],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise RuntimeError((done.stdout + done.stderr).strip()[-3000:])
    # Written last: a build that stopped half way is never used.
    manifest = {"python": cache_tag(), "sources": sources}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.accel_build",
        description="Compile p2psim's hottest modules with mypyc (optional; p2psim runs "
        "without them, about 1.4x slower).",
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="build directory")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if the build is up to date"
    )
    args = parser.parse_args(argv)
    if not args.force and stale_reason(args.dir) is None:
        print(f"p2psim compiled modules: up to date in {args.dir}")
        return 0
    try:
        took = build(args.dir)
    except (RuntimeError, OSError) as exc:
        print(
            f"p2psim compiled modules: build failed, p2psim runs as pure Python "
            f"(needs a C compiler and Python headers: apt-get install gcc python3-dev):\n{exc}",
            file=sys.stderr,
        )
        return 1
    print(f"p2psim compiled modules: built {', '.join(MODULES)} in {took:.0f} s ({args.dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
