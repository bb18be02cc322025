"""The build environment of `scripts/env.sh` (one shared cargo target folder), the binaries built
in it, and the project's Jupyter kernel.

Kernels need none of this: the kernel spec `aquabill` (installed by `scripts/setup.sh`) carries
its own environment, and each kernel compiles its cells in a folder of its own, so any number run
side by side.
"""

from __future__ import annotations

import hashlib
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
    """Builds a binary of this clone's workspace (or one of a package's examples) in the shared
    build and returns the path of a copy of its own, under the clone's folder of the target.

    Every clone on the machine builds into one target folder, where cargo keeps each clone's
    binaries apart under hashed names but links the last one built to the plain name
    (`debug/examples/run_once`), and leaves that link alone when this clone's binary is fresh:
    the plain name may be another clone's build. Removed first, it is linked again to this
    clone's. One package per cargo call: packages built together would unify their
    dependencies' features and rebuild them."""
    load_build_env()
    target = Path(os.environ['CARGO_TARGET_DIR'])
    debug = target / 'debug'
    name = example if example is not None else package
    plain = debug / 'examples' / name if example is not None else debug / name
    plain.unlink(missing_ok=True)
    cmd = ['cargo', 'build', '--quiet', '-p', package]
    if example is not None:
        cmd += ['--example', example]
    subprocess.run(cmd, cwd=ROOT, check=True)
    if not plain.is_file():
        raise FileNotFoundError(plain)
    own = target / 'aquabill-bins' / clone_id() / name
    own.parent.mkdir(parents=True, exist_ok=True)
    staged = own.with_name(f'.{name}.{os.getpid()}')
    os.link(plain, staged)
    staged.replace(own)
    return own


def clone_id() -> str:
    """A name for this clone's folder in the shared target: a digest of its path."""
    return hashlib.sha256(str(ROOT).encode()).hexdigest()[:16]
