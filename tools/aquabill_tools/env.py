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
# interactive use needs (types of untyped `let`s, completions): 3-4 s of each kernel's start.
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


# What a library or binary built from the `aquabill` package carries before its sources'
# digest (`src/source_digest.rs`), and `;` after it.
DIGEST_MARKER = b'aquabill-source-digest:'


def source_digest(root: Path = ROOT) -> str:
    """The digest of a checkout's library sources, as `src/source_digest.rs` computes it:
    FNV-1a (128 bits) over each file's path, a zero byte, its length (8 bytes, little-endian)
    and its bytes, in the order of the paths; the files are `Cargo.toml`, `Cargo.lock`,
    `build.rs` and every `.rs` file under `src/`, hidden ones left out."""
    files = ['Cargo.toml', 'Cargo.lock', 'build.rs']
    files += [p.relative_to(root).as_posix() for p in (root / 'src').rglob('*.rs')
              if not any(part.startswith('.') for part in p.relative_to(root).parts)]
    digest, prime, mask = 0x6c62272e07bb014262b821756295c58d, 2**88 + 0x13b, 2**128 - 1
    for name in sorted(files):
        data = (root / name).read_bytes()
        for chunk in (name.encode(), b'\0', len(data).to_bytes(8, 'little'), data):
            for byte in chunk:
                digest = ((digest ^ byte) * prime) & mask
    return f'{digest:032x}'


def built(package: str, example: str | None = None) -> Path:
    """Builds a binary of this clone's workspace (or one of a package's examples) in the shared
    build and returns the path of a copy of its own.

    Every clone on the machine builds into one target folder, where cargo names two clones'
    builds of a package alike and may find this clone's build fresh with the other clone's
    binary in place. So the plain name (`debug/examples/run_once`) is removed first, so that
    cargo links it again; a binary of the `aquabill` package must carry this clone's source
    digest, or this clone's `src/lib.rs` is marked changed and it is built again (as the
    notebook's import cell does for the library); an example's source and other packages'
    sources are marked changed before every build. The result is copied (hard-linked) under
    `aquabill-bins/`. One package per cargo call: packages built together would unify their
    dependencies' features and rebuild them."""
    load_build_env()
    target = Path(os.environ['CARGO_TARGET_DIR'])
    debug = target / 'debug'
    name = example if example is not None else package
    plain = debug / 'examples' / name if example is not None else debug / name
    cmd = ['cargo', 'build', '--quiet', '-p', package]
    if example is not None:
        cmd += ['--example', example]
    # The library's code is in a binary of the package that uses it; an example that does not
    # (a reference point such as `bare_pass`) carries no digest, and its own source, marked
    # changed, makes cargo build it again.
    example_source = ROOT / 'examples' / f'{example}.rs'
    uses_library = package == 'aquabill' and (
        example is None or 'aquabill::' in example_source.read_text())
    digest = source_digest() if uses_library else None
    if example is not None and package == 'aquabill':
        os.utime(example_source)
    elif digest is None:
        for manifest in ROOT.glob('*/Cargo.toml'):
            if f'name = "{package}"' in manifest.read_text():
                for source in (manifest.parent / 'src').glob('*.rs'):
                    os.utime(source)
    for attempt in range(2):
        plain.unlink(missing_ok=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
        if not plain.is_file():
            raise FileNotFoundError(plain)
        if digest is None or DIGEST_MARKER + digest.encode() + b';' in plain.read_bytes():
            break
        if attempt == 1:
            raise RuntimeError(f'{plain} does not carry this clone\'s source digest {digest}, '
                               'even after building again: another clone is building into the '
                               'same target folder')
        os.utime(ROOT / 'src' / 'lib.rs')
    own = target / 'aquabill-bins' / (digest or clone_id()) / name
    own.parent.mkdir(parents=True, exist_ok=True)
    staged = own.with_name(f'.{name}.{os.getpid()}')
    os.link(plain, staged)
    staged.replace(own)
    return own


def clone_id() -> str:
    """A name for this clone's folder in the shared target: a digest of its path."""
    return hashlib.sha256(str(ROOT).encode()).hexdigest()[:16]
