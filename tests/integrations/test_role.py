"""The tether.agent.agent role and the Salt formula salt/formula/tether against a real
tether-receiver and a real `tether daemon`.

There is no systemd here, and the real package manager must not be touched: the role runs
with tether_agent_install=none and tether_agent_service_manage=false, and the test starts
`tether daemon` itself on the configuration the role wrote (as the unit would). Everything
else is real: tether.toml is templated, the daemon listens on the port the role waits for,
the registration goes to the site, and the site then pulls the agent output from the daemon.
The .deb install path is checked in check mode (it must report a change and install
nothing) where python3-apt and dpkg are available.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integration_helpers import HERE, REG_PASSWORD, REG_USER, REPO, SALT_DIR, SITE, TETHER_BIN, parse_json, run, tool
from test_ansible import ansible_env, playbook

ROLE_PB = HERE / "playbooks" / "role.yml"
AGENT_OUTPUT = REPO / "tests" / "fixtures" / "agent-output-linux.txt"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon(object):
    """`tether daemon` on the configuration the role or the formula wrote."""

    def __init__(self, home, config):
        self.home, self.config, self.proc = home, config, None

    def start(self, port):
        log = open(str(self.home.parent / "daemon.log"), "w")
        self.proc = subprocess.Popen([TETHER_BIN, "daemon", "--config", str(self.config)],
                                     env=dict(__import__("os").environ, TETHER_HOME=str(self.home)),
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            assert self.proc.poll() is None, (self.home.parent / "daemon.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("tether daemon did not listen on %d" % port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def connections(home):
    proc = run([TETHER_BIN, "status", "--json", "--no-query-remote"], env={"TETHER_HOME": str(home)})
    return sorted((c["uuid"], c["host_name"], c["site"]) for c in parse_json(proc.stdout)["connections"])


def add_host(receiver, host, port):
    """The host on the site, pulled from the daemon on 127.0.0.1:port."""
    receiver.cli("host", "add", host, "--address", "127.0.0.1", "--agent-port", str(port), "--dir", receiver.dir)


def site_pulls(receiver, host):
    """The site fetches `host` from its daemon; returns the fetch document."""
    return parse_json(receiver.cli("fetch", host, "--json", "--dir", receiver.dir).stdout)


def role_vars(receiver, tmp, host, port, **extra):
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    v = {
        "tether_agent_install": "none",
        "tether_agent_service_manage": False,
        "tether_agent_bin": TETHER_BIN,
        "tether_agent_home": str(home),
        # tether reads $TETHER_HOME/tether.toml before /etc/tether/tether.toml.
        "tether_agent_config_path": str(home / "tether.toml"),
        "tether_agent_port": port,
        "tether_agent_pull_listen": ["127.0.0.1:%d" % port],
        "tether_agent_agent_file": str(AGENT_OUTPUT),
        "tether_agent_server": receiver.address,
        "tether_agent_site": SITE,
        "tether_agent_host_name": host,
        "tether_agent_user": REG_USER,
        "tether_agent_password": REG_PASSWORD,
        "tether_agent_trust_fingerprint": receiver.fingerprint,
        "tether_agent_wait_timeout": 20,
    }
    v.update(extra)
    path = tmp / "role-vars.json"
    path.write_text(json.dumps(v))
    return home, ["-i", "localhost,", "-c", "local", ROLE_PB, "-e", "@%s" % path]


def test_role_argument_specs_document_every_default(tmp_path):
    """Every variable in defaults/main.yml is documented in meta/argument_specs.yml, and
    ansible-doc shows the role."""
    import yaml

    role = REPO / "ansible" / "ansible_collections" / "tether" / "agent" / "roles" / "agent"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(spec), set(defaults) ^ set(spec)
    doc = json.loads(run([tool("ansible-doc"), "-t", "role", "--json", "tether.agent.agent"],
                         env=ansible_env(tmp_path)).stdout)
    assert "tether_agent_install" in doc["tether.agent.agent"]["entry_points"]["main"]["options"]


def test_role_rejects_bad_variables(tmp_path, receiver):
    home, args = role_vars(receiver, tmp_path, "role02", free_port(), tether_agent_install="apt-get")
    rc, out, stats = playbook(tmp_path, args, check=False)
    assert rc != 0 and "tether_agent_install" in out, out
    assert not (home / "tether.toml").exists()


def test_role_check_mode_then_converges_and_is_idempotent(receiver, tmp_path):
    port = free_port()
    add_host(receiver, "role01", port)
    home, args = role_vars(receiver, tmp_path, "role01", port)
    config = home / "tether.toml"

    # Check mode on a fresh host: changes announced, nothing written, nothing registered.
    rc, out, stats = playbook(tmp_path, args + ["--check", "--diff"])
    assert stats["localhost"]["changed"] >= 2 and stats["localhost"]["failed"] == 0, out
    assert not config.exists() and connections(home) == []
    assert REG_PASSWORD not in out

    # The real run: the port is not served yet (no systemd here), so do not wait for it.
    rc, out, stats = playbook(tmp_path, args + ["-e", "tether_agent_wait_for_port=false"])
    assert stats["localhost"]["changed"] == 2 and stats["localhost"]["failed"] == 0, out
    text = config.read_text()
    assert 'listen = ["127.0.0.1:%d"]' % port in text and str(AGENT_OUTPUT) in text, text
    assert oct(config.stat().st_mode & 0o777) == "0o644"
    assert [c[1] for c in connections(home)] == ["role01"]
    assert REG_PASSWORD not in out

    daemon = Daemon(home, config).start(port)
    try:
        # Second run, waiting for the port the daemon now serves: nothing changes.
        before = connections(home)
        rc, out, stats = playbook(tmp_path, args)
        assert stats["localhost"]["changed"] == 0 and stats["localhost"]["failed"] == 0, out
        assert "Wait for the pull port" in out
        assert connections(home) == before
        # Check mode on the converged host: no change.
        rc, out, stats = playbook(tmp_path, args + ["--check", "--diff"])
        assert stats["localhost"]["changed"] == 0, out
        # The registered host is served: the site pulls it over mutual TLS.
        fetched = site_pulls(receiver, "role01")
        assert fetched["ok"] is True, fetched
        # A changed setting is a change (and only that one), then steady again.
        rc, out, stats = playbook(tmp_path, args + ["-e", "tether_agent_log_format=json", "--check", "--diff"])
        assert stats["localhost"]["changed"] == 1 and 'log_format = "text"' in config.read_text(), out
        rc, out, stats = playbook(tmp_path, args + ["-e", "tether_agent_log_format=json"])
        assert stats["localhost"]["changed"] == 1 and 'log_format = "json"' in config.read_text(), out
        rc, out, stats = playbook(tmp_path, args + ["-e", "tether_agent_log_format=json"])
        assert stats["localhost"]["changed"] == 0, out
    finally:
        daemon.stop()


def agent_debs(out):
    """The agent .deb: target/packages' when built, else one packaged here from the binaries
    under test (packaging/build.sh with PROFILE=dev compiles nothing)."""
    debs = sorted((REPO / "target" / "packages").glob("tether_*.deb"))
    if debs:
        return debs
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is missing (apt-get install dpkg-dev); tests/install_deps.sh installs it")
    env = dict(os.environ, PROFILE="dev", BIN_DIR=str(Path(TETHER_BIN).parent), OUT=str(out), FAST="1")
    subprocess.run(["bash", str(REPO / "packaging" / "build.sh")], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return sorted(Path(out).glob("tether_*.deb"))


def test_role_deb_install_in_check_mode(receiver, tmp_path):
    """tether_agent_install=file with a .deb: check mode reports the copy and installs nothing."""
    debs = agent_debs(tmp_path / "packages")
    assert debs, "packaging/build.sh made no agent .deb"
    home, args = role_vars(receiver, tmp_path, "role03", free_port(), tether_agent_install="file",
                           tether_agent_package_file=str(debs[-1]),
                           tether_agent_package_dest=str(tmp_path / "pkgcache"))
    rc, out, stats = playbook(tmp_path, args + ["--check"])
    assert stats["localhost"]["failed"] == 0 and stats["localhost"]["changed"] >= 2, out
    assert "would register role03" in out, out
    assert not (tmp_path / "pkgcache").exists()
    assert connections(home) == []


# -- the Salt formula -----------------------------------------------------------------------


def salt_minion(tmp, pillar):
    conf = tmp / "conf"
    root = tmp / "root"
    pillar_dir = tmp / "pillar"
    for d in (conf, root, pillar_dir):
        d.mkdir(parents=True, exist_ok=True)
    (conf / "minion").write_text(json.dumps({
        "id": "saltrole01",
        "file_client": "local",
        "root_dir": str(root),
        "cachedir": str(root / "cache"),
        "pki_dir": str(root / "pki"),
        "sock_dir": str(root / "sock"),
        "log_file": str(root / "minion.log"),
        "module_dirs": [str(SALT_DIR / "_modules")],
        "states_dirs": [str(SALT_DIR / "_states")],
        "file_roots": {"base": [str(SALT_DIR / "formula")]},
        "pillar_roots": {"base": [str(pillar_dir)]},
        "grains_cache": False,
        "enable_fqdns_grains": False,
    }))
    (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - tether\n")
    (pillar_dir / "tether.sls").write_text(json.dumps({"tether": pillar}))
    return conf


def salt_apply(conf, *args):
    proc = run([tool("salt-call"), "--local", "-c", conf, "--out", "json", "--log-level", "warning",
                "state.apply", "tether"] + list(args), check=False, timeout=300)
    try:
        doc = json.loads(proc.stdout)["local"]
    except (ValueError, KeyError):
        raise AssertionError("salt-call: no JSON (%s):\n%s%s" % (proc.returncode, proc.stdout, proc.stderr))
    assert isinstance(doc, dict), doc
    return proc.returncode, doc, proc.stdout + proc.stderr


def changed_states(doc):
    return sorted(v["__id__"] for v in doc.values() if v.get("changes"))


def test_salt_formula_test_mode_then_converges_and_is_idempotent(receiver, tmp_path):
    port = free_port()
    add_host(receiver, "saltrole01", port)
    home = tmp_path / "home"
    home.mkdir()
    config = home / "tether.toml"
    pillar = {
        "server": receiver.address, "site": SITE, "user": REG_USER, "registration_password": REG_PASSWORD,
        "fingerprint": receiver.fingerprint, "tether_bin": TETHER_BIN, "tether_home": str(home),
        "host_name": "saltrole01",
        "install": "none", "service": False, "config_path": str(config), "port": port,
        "config": {"pull": {"listen": ["127.0.0.1:%d" % port]}, "agent": {"file": str(AGENT_OUTPUT)}},
    }
    conf = salt_minion(tmp_path, pillar)

    rc, doc, out = salt_apply(conf, "test=True")
    assert rc == 0 and all(v["result"] in (True, None) for v in doc.values()), out
    # None: would write, would register, and the port does not answer yet.
    assert sorted(v["__id__"] for v in doc.values() if v["result"] is None) == [
        "tether-config", "tether-port", "tether-registered"], doc
    assert not config.exists() and connections(home) == []

    rc, doc, out = salt_apply(conf, "pillar=" + json.dumps({"tether": {"wait_for_port": False}}))
    assert rc == 0, out
    assert changed_states(doc) == ["tether-config", "tether-registered"], doc
    assert 'listen = ["127.0.0.1:%d"]' % port in config.read_text()
    assert [c[1] for c in connections(home)] == ["saltrole01"]
    assert REG_PASSWORD not in out

    daemon = Daemon(home, config).start(port)
    try:
        rc, doc, out = salt_apply(conf)
        assert rc == 0 and changed_states(doc) == [], out
        assert any(v["__id__"] == "tether-port" and v["result"] is True for v in doc.values()), doc
        rc, doc, out = salt_apply(conf, "test=True")
        assert rc == 0 and all(v["result"] is True for v in doc.values()), doc
        assert site_pulls(receiver, "saltrole01")["ok"] is True
    finally:
        daemon.stop()
