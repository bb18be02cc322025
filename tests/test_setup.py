"""The set-up as a newcomer meets it: the README's commands, the dev container and the kernel spec
agree, and the installed kernel binary runs without the project's environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from conftest import ROOT

README = (ROOT / 'README.md').read_text()


def test_readme_commands_are_the_scripts() -> None:
    block = re.search(r'```sh\n(.*?)```', README, re.S)
    assert block, 'the README opens its set-up with a shell block'
    commands = [line.split('#')[0].strip() for line in block.group(1).splitlines()]
    assert commands == ['bash scripts/run-sample.sh', 'bash scripts/test.sh']
    for command in commands:
        assert (ROOT / command.split()[1]).is_file(), command
    assert (ROOT / '.ci' / 'run').read_text().rstrip().endswith('exec bash scripts/test.sh')


def test_dev_container_uses_the_set_up_script() -> None:
    config = json.loads((ROOT / '.devcontainer' / 'devcontainer.json').read_text())
    assert config['postCreateCommand'] == 'bash scripts/setup.sh --lab'
    assert 'bash scripts/lab.sh' in config['postStartCommand']
    assert 'bash scripts/lab.sh' in README


def test_kernel_spec_carries_its_environment() -> None:
    data = Path(os.environ.get('JUPYTER_DATA_DIR', Path.home() / '.local' / 'share' / 'jupyter'))
    spec_dir = data / 'kernels' / 'aquabill'
    spec = json.loads((spec_dir / 'kernel.json').read_text())
    assert spec['argv'][0] == str(spec_dir / 'launch')
    assert spec['language'] == 'rust'
    # The copies the spec runs are the repository's (a set-up after a change refreshes them).
    assert (spec_dir / 'launch').read_text() == (ROOT / 'scripts' / 'kernel' / 'launch').read_text()
    assert (ROOT / 'scripts' / 'env.sh').read_text() in (spec_dir / 'env.sh').read_text()
    nb = json.loads((ROOT / 'notebooks' / 'hourly_billing.ipynb').read_text())
    assert nb['metadata']['kernelspec']['name'] == 'aquabill'


def test_kernel_binary_needs_no_project_environment() -> None:
    evcxr = Path.home() / '.cargo' / 'bin' / 'evcxr_jupyter'
    done = subprocess.run([str(evcxr), '--help'], env={}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    ldd = subprocess.run(['ldd', str(evcxr)], capture_output=True, text=True, check=True).stdout
    assert 'not found' not in ldd, ldd
