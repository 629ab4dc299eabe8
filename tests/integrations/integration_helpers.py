"""Helpers for the Ansible and Salt integration tests (fixtures are in conftest.py).

The binaries are not built here: TETHER_BIN and TETHER_RECEIVER_BIN name them,
default target/debug/tether and target/debug/tether-receiver of the repository.
The end-to-end tests start a real tether-receiver on 127.0.0.1 with an ephemeral
port in a temporary directory, with a registration-only user and a few hosts.

Without the binaries the end-to-end tests are skipped, unless
TETHER_INTEGRATIONS_REQUIRE_BINARIES=1 (or CI=true), where they fail.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "ansible"
COLLECTION = COLLECTIONS / "ansible_collections" / "tether" / "agent"
SALT_DIR = REPO / "salt"
HERE = Path(__file__).resolve().parent

SITE = "prod"
REG_USER = "agent_registration"
# A password that must never show up in any argv or output.
REG_PASSWORD = "Pw-never-in-argv-9f3c1a"
HOSTS = ["web01", "web02", "web03", "web05", "web06", "tok01", "salt01"]
WRONG_FINGERPRINT = "sha256:" + "00" * 32


def binary(env_var, default):
    path = os.environ.get(env_var) or str(REPO / "target" / "debug" / default)
    return str(Path(path).resolve()) if os.sep in path else path


TETHER_BIN = binary("TETHER_BIN", "tether")
RECEIVER_BIN = binary("TETHER_RECEIVER_BIN", "tether-receiver")


def tool(name):
    """An installed console script: next to this Python first, then PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.skip("%s is not installed (pip install -r tests/integrations/requirements.txt)" % name)
    return found


def run(argv, check=True, input=None, env=None, timeout=300, cwd=None):
    """Runs argv (no shell); returns the CompletedProcess with text stdout/stderr."""
    environ = dict(os.environ)
    environ.update(env or {})
    proc = subprocess.run(
        [str(a) for a in argv],
        input=input,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        env=environ,
        timeout=timeout,
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            "%s exited %s\n--- stdout\n%s\n--- stderr\n%s" % (argv, proc.returncode, proc.stdout, proc.stderr)
        )
    return proc


def _help_has(binary_path, word):
    try:
        out = subprocess.run([binary_path, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(r"^\s+%s\b" % re.escape(word), out, re.M) is not None


def require_binaries():
    missing = []
    if not _help_has(TETHER_BIN, "register"):
        missing.append("%s (with `register`)" % TETHER_BIN)
    if not _help_has(RECEIVER_BIN, "serve"):
        missing.append("%s (with `serve`)" % RECEIVER_BIN)
    if missing:
        msg = "tether binaries missing: %s; build them (cargo build) or set TETHER_BIN/TETHER_RECEIVER_BIN" % (
            ", ".join(missing))
        if os.environ.get("TETHER_INTEGRATIONS_REQUIRE_BINARIES") == "1" or os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def parse_json(text):
    """The single JSON document a --json command printed."""
    return json.loads(text)


class Receiver(object):
    def __init__(self, base):
        self.base = base
        self.dir = base / "receiver"
        self.ready = base / "receiver.ready"
        self.log = base / "receiver.log"
        self.proc = None
        self.fingerprint = None
        self.address = None

    def cli(self, *args, **kw):
        return run([RECEIVER_BIN] + list(args), **kw)

    def init(self, users=True):
        """Creates the site; with ``users``, also the registration user and the hosts."""
        init = parse_json(self.cli("init", "--dir", self.dir, "--site", SITE, "--json").stdout)
        self.fingerprint = init.get("fingerprint") or init.get("root_cert_fingerprint")
        assert self.fingerprint and self.fingerprint.startswith("sha256:"), init
        if not users:
            return self
        self.cli("user", "add", REG_USER, "--role", "agent_registration", "--password-stdin", "--dir", self.dir,
                 input=REG_PASSWORD)
        for host in HOSTS:
            self.cli("host", "add", host, "--dir", self.dir)
        return self

    def start(self):
        self.init()
        return self.serve()

    def serve(self):
        """Starts `serve` on 127.0.0.1 with an ephemeral port; waits for the ready file."""
        logf = open(str(self.log), "w")
        self.proc = subprocess.Popen(
            [RECEIVER_BIN, "serve", "--dir", str(self.dir), "--listen", "127.0.0.1:0", "--ready-file",
             str(self.ready)],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("tether-receiver serve exited %s:\n%s" % (self.proc.returncode,
                                                                             self.log.read_text()))
            if self.ready.exists() and self.ready.read_text().strip():
                self.address = self.ready.read_text().strip().splitlines()[0]
                return self
            time.sleep(0.1)
        raise AssertionError("tether-receiver serve did not become ready:\n%s" % self.log.read_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ConnectProxy(object):
    """The CONNECT-only test proxy of tests/support/connect_proxy.py on 127.0.0.1; records
    every tunnel's target."""

    SCRIPT = REPO / "tests" / "support" / "connect_proxy.py"

    def __init__(self, base):
        self.base = base
        self.log = base / "proxy-connects.log"
        self.ready = base / "proxy.ready"
        self.proc = None
        self.port = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(self.SCRIPT), "--log", str(self.log), "--ready-file", str(self.ready),
             "--max-seconds", "600"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.ready.exists() and self.ready.read_text().strip():
                self.port = int(self.ready.read_text().strip())
                return self
            time.sleep(0.05)
        raise AssertionError("the test proxy did not start")

    def url(self, credentials=None):
        return "http://%s127.0.0.1:%d" % (credentials + "@" if credentials else "", self.port)

    def connects(self):
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
