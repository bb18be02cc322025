"""The build environment the evcxr kernel shares with cargo (`scripts/env.sh`), and the one
kernel per build directory rule."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent.parent


def load_build_env() -> None:
    """Sets the variables of `scripts/env.sh` in this process unless they are set already."""
    if os.environ.get('EVCXR_TMPDIR') and os.environ.get('CARGO_TARGET_DIR'):
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
    debug = Path(os.environ['CARGO_TARGET_DIR']) / os.environ['CARGO_BUILD_TARGET'] / 'debug'
    path = debug / 'examples' / example if example is not None else debug / package
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def lock_kernel_dir() -> IO[str]:
    """Waits until no other kernel uses EVCXR_TMPDIR, then holds it (until the file closes).

    Also copies the workspace's Cargo.lock there: the kernel's crate then resolves its
    dependencies as the workspace does and reuses what `cargo build` compiled.
    """
    tmpdir = os.environ.get('EVCXR_TMPDIR')
    if not tmpdir:
        raise RuntimeError('EVCXR_TMPDIR is not set: source scripts/env.sh first')
    Path(tmpdir).mkdir(parents=True, exist_ok=True)
    lock = open(Path(tmpdir) / '.kernel.lock', 'w')
    fcntl.flock(lock, fcntl.LOCK_EX)
    shutil.copyfile(ROOT / 'Cargo.lock', Path(tmpdir) / 'Cargo.lock')
    return lock
