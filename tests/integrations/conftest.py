"""Fixtures for the Ansible and Salt integration tests (helpers: integration_helpers.py)."""

import sys

import pytest

from integration_helpers import TETHER_BIN, Receiver, require_binaries


@pytest.fixture(scope="session")
def receiver(tmp_path_factory):
    require_binaries()
    r = Receiver(tmp_path_factory.mktemp("site"))
    try:
        yield r.start()
    finally:
        r.stop()


@pytest.fixture(scope="session")
def argv_wrapper(tmp_path_factory):
    """A tether_bin that records its argv (one JSON line each) and execs the real binary."""
    base = tmp_path_factory.mktemp("wrapper")
    log = base / "argv.jsonl"
    script = base / "tether"
    script.write_text(
        "#!%s\n"
        "import json, os, sys\n"
        "with open(%r, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv) + '\\n')\n"
        "os.execv(%r, [%r] + sys.argv[1:])\n" % (sys.executable, str(log), TETHER_BIN, TETHER_BIN)
    )
    script.chmod(0o755)
    return script, log
