"""The build environment of `scripts/env.sh` (one shared cargo target folder), the binaries built
in it, and the project's Jupyter kernel.

Kernels need none of this: the kernel spec `aquabill` (installed by `scripts/setup.sh`) carries
its own environment, and each kernel compiles its cells in a folder of its own, so any number run
side by side.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# The Jupyter kernel spec `scripts/setup.sh` installs ("Rust (aquabill)").
KERNEL_NAME = 'aquabill'
# Set to 1, the kernel skips the analysis of the standard library's sources that only
# interactive use needs (types of untyped `let`s, completions): 8-14 s of each kernel's start.
LEAN_KERNEL = 'AQUABILL_LEAN_KERNEL'


def batch_kernel_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a kernel that runs the notebook unattended (papermill, the tests):
    `base` (default this process's) with a lean kernel unless `base` chose otherwise."""
    env = dict(os.environ if base is None else base)
    env.setdefault(LEAN_KERNEL, '1')
    return env


def load_build_env() -> None:
    """Sets the variables of `scripts/env.sh` in this process unless they are set already."""
    if os.environ.get('AQUABILL_CACHE') and os.environ.get('CARGO_TARGET_DIR'):
        return
    out = subprocess.run(['bash', '-c', f'. "{ROOT}/scripts/env.sh" && env -0'],
                         check=True, capture_output=True).stdout
    for entry in out.split(b'\0'):
        name, sep, value = entry.decode().partition('=')
        if sep:
            os.environ[name] = value


def built(package: str, example: str | None = None) -> Path:
    """Builds a binary of the workspace (or one of a package's examples) in the shared build
    and returns its path. One package per cargo call: packages built together would unify
    their dependencies' features and rebuild them."""
    load_build_env()
    cmd = ['cargo', 'build', '--quiet', '-p', package]
    if example is not None:
        cmd += ['--example', example]
    subprocess.run(cmd, cwd=ROOT, check=True)
    debug = Path(os.environ['CARGO_TARGET_DIR']) / 'debug'
    path = debug / 'examples' / example if example is not None else debug / package
    if not path.is_file():
        raise FileNotFoundError(path)
    return path
