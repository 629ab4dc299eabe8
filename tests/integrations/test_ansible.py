"""The tether.agent Ansible collection against a real tether-receiver and the real tether binary."""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from integration_helpers import (
    COLLECTION,
    ConnectProxy,
    COLLECTIONS,
    HERE,
    RECEIVER_BIN,
    REG_PASSWORD,
    REG_USER,
    SITE,
    TETHER_BIN,
    WRONG_FINGERPRINT,
    Receiver,
    parse_json,
    require_binaries,
    run,
    tool,
)

MODULES = ["registration", "status", "receiver_apply", "pending"]
ENROLL = COLLECTION / "playbooks" / "examples" / "enroll.yml"


def ansible_env(tmp):
    cfg = tmp / "ansible.cfg"
    if not cfg.exists():
        cfg.write_text("[defaults]\nretry_files_enabled = False\n")
    return {
        "ANSIBLE_CONFIG": str(cfg),
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-remote"),
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        # The modules must not pick a password up from the environment of the test run.
        "TETHER_PASSWORD": "",
    }


def recap(output):
    """{host: {ok:, changed:, failed:, ...}} from the PLAY RECAP."""
    stats = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        stats[m.group(1)] = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2)))
    return stats


def playbook(tmp, args, check=True):
    proc = run([tool("ansible-playbook")] + [str(a) for a in args], env=ansible_env(tmp), check=False)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError("ansible-playbook failed (%s):\n%s" % (proc.returncode, out))
    return proc.returncode, out, recap(proc.stdout)


# -- documentation and sanity: need no binaries ----------------------------------------


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_loads(module, tmp_path):
    proc = run([tool("ansible-doc"), "--json", "tether.agent." + module], env=ansible_env(tmp_path))
    doc = json.loads(proc.stdout)["tether.agent." + module]
    assert doc["doc"]["module"] == module
    assert doc["examples"].strip()
    assert doc["return"]
    run([tool("ansible-doc"), "tether.agent." + module], env=ansible_env(tmp_path))


def test_registration_secrets_are_no_log(tmp_path):
    proc = run([tool("ansible-doc"), "--json", "tether.agent.registration"], env=ansible_env(tmp_path))
    opts = json.loads(proc.stdout)["tether.agent.registration"]["doc"]["options"]
    for name in ("state", "server", "site", "host_name", "mode", "agent_labels", "user", "password", "token",
                 "trust_fingerprint", "force", "key_type", "wait", "timeout", "tether_bin", "tether_home"):
        assert name in opts, name
    src = (COLLECTION / "plugins" / "modules" / "registration.py").read_text()
    assert "password=dict(type='str', no_log=True)" in src
    assert "token=dict(type='str', no_log=True)" in src


def test_playbooks_syntax(tmp_path):
    inv = tmp_path / "inventory.ini"
    inv.write_text("[monitoring_site]\nsite\n[monitored]\nweb01\n")
    for pb in [ENROLL] + sorted((HERE / "playbooks").glob("*.yml")):
        run([tool("ansible-playbook"), "--syntax-check", "-i", inv, pb], env=ansible_env(tmp_path))


def _pip_version_wanted():
    try:
        import ansible_test._internal.python_requirements as pr
        m = re.search(r"pip='([\d.]+)'", Path(pr.__file__).read_text())
        return m.group(1) if m else None
    except Exception:
        return None


GET_PIP_SHIM = '''\
# Stand-in for get-pip.py, which ansible-test downloads from its own file server
# (not reachable offline): bootstrap pip from the wheel bundled with Python, then
# run "pip install ARGS" as get-pip.py would.
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
env = dict(os.environ)
for cafile in (env.get("PIP_CERT"), env.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
    if cafile and os.path.exists(cafile):
        env["PIP_CERT"] = cafile
        break
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args, env=env))
'''


def test_ansible_test_sanity(tmp_path):
    """ansible-test sanity on a copy of the collection (its output stays out of the repo).

    ansible-test builds one virtualenv per test and bootstraps pip in it with a
    get-pip.py fetched from ansible's own file server; where that is unreachable a
    stand-in that uses ensurepip is put in ansible-test's cache. Its requirements
    come from PyPI; without PyPI the test is skipped. The venvs are cached in
    TETHER_ANSIBLE_TEST_HOME (default ~/.cache/tether-ansible-test).
    """
    if os.environ.get("TETHER_SKIP_ANSIBLE_TEST") == "1":
        pytest.skip("TETHER_SKIP_ANSIBLE_TEST=1")
    ansible_test = tool("ansible-test")
    home = Path(os.environ.get("TETHER_ANSIBLE_TEST_HOME") or Path.home() / ".cache" / "tether-ansible-test")
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    version = _pip_version_wanted()
    if version:
        shim = cache / ("get_pip_%s.py" % version.replace(".", "_"))
        if not shim.exists():
            shim.write_text(GET_PIP_SHIM)
    root = tmp_path / "ansible_collections" / "tether" / "agent"
    shutil.copytree(str(COLLECTION), str(root), ignore=shutil.ignore_patterns("output", "__pycache__", "*.tar.gz"))
    env = dict(ansible_env(tmp_path))
    env["HOME"] = str(home)
    proc = run([ansible_test, "sanity", "--python", "%d.%d" % sys.version_info[:2], "--color", "no"],
               env=env, check=False, cwd=str(root), timeout=900)
    out = proc.stdout + proc.stderr
    offline = ("Download failed", "Could not fetch URL", "No matching distribution found",
               "Failed to establish a new connection", "does not have pip available")
    if proc.returncode != 0 and any(s in out for s in offline):
        pytest.skip("ansible-test sanity could not install its requirements offline:\n" + out[-3000:])
    assert proc.returncode == 0, out[-6000:]


# -- end to end: a real tether-receiver, the real tether ---------------------------------


def inventory(tmp, receiver, wrapper, hosts):
    lines = ["[monitoring_site]",
             "site ansible_connection=local tether_receiver_dir=%s tether_receiver_bin=%s" % (receiver.dir,
                                                                                             RECEIVER_BIN),
             "[monitored]"]
    for h in hosts:
        home = tmp / "agents" / h
        home.mkdir(parents=True, exist_ok=True)
        lines.append("%s ansible_connection=local tether_home=%s tether_bin=%s" % (h, home, wrapper))
    inv = tmp / "inventory.ini"
    inv.write_text("\n".join(lines) + "\n")
    extra = tmp / "vars.json"
    extra.write_text(json.dumps({
        "tether_server": receiver.address,
        "tether_site": SITE,
        "tether_fingerprint": receiver.fingerprint,
        "tether_registration_user": REG_USER,
        "vault_tether_registration_password": REG_PASSWORD,
    }))
    return inv, "@%s" % extra


def agent_status(home):
    proc = run([TETHER_BIN, "status", "--json", "--no-query-remote"], env={"TETHER_HOME": str(home)})
    doc = parse_json(proc.stdout)
    assert doc["ok"] is True, doc
    return doc


def connections(home):
    return sorted((c["uuid"], c["host_name"], c["server"], c["site"]) for c in agent_status(home)["connections"])


def assert_no_password(out, argv_log):
    assert REG_PASSWORD not in out
    if argv_log.exists():
        text = argv_log.read_text()
        assert text.strip(), "the wrapper recorded no call"
        assert REG_PASSWORD not in text


@pytest.fixture(scope="module")
def enroll_env(receiver, argv_wrapper, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ansible")
    wrapper, argv_log = argv_wrapper
    inv, extra = inventory(tmp, receiver, wrapper, ["web01", "web02"])
    return tmp, inv, extra, argv_log


def test_enroll_check_mode_first_changes_nothing(enroll_env):
    tmp, inv, extra, argv_log = enroll_env
    rc, out, stats = playbook(tmp, ["-i", inv, "-e", extra, "--skip-tags", "site", "--check", "--diff", "-v",
                                    ENROLL], check=False)
    # The assert task fails in check mode (nothing is registered yet); registration reports a change.
    assert "would" in out or "changed: [web01]" in out, out
    assert stats["web01"]["changed"] >= 1, out
    for h in ("web01", "web02"):
        assert connections(tmp / "agents" / h) == []
    assert_no_password(out, argv_log)
    calls = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert not [c for c in calls if c[1] in ("register", "register-new", "delete")], calls


def test_enroll_registers_then_is_idempotent(enroll_env, receiver):
    tmp, inv, extra, argv_log = enroll_env
    rc, out, stats = playbook(tmp, ["-i", inv, "-e", extra, "--skip-tags", "site", "-v", ENROLL])
    assert stats["web01"]["changed"] == 1 and stats["web02"]["changed"] == 1, out
    assert stats["web01"]["failed"] == 0 and stats["web02"]["failed"] == 0, out
    for h in ("web01", "web02"):
        conns = agent_status(tmp / "agents" / h)["connections"]
        assert len(conns) == 1, conns
        assert conns[0]["host_name"] == h and conns[0]["site"] == SITE
        assert conns[0]["trust"] == "fingerprint"
    assert_no_password(out, argv_log)
    calls = [json.loads(line) for line in argv_log.read_text().splitlines()]
    registers = [c for c in calls if c[1] == "register"]
    assert len(registers) == 2 and all("--password-stdin" in c for c in registers), registers

    before = {h: connections(tmp / "agents" / h) for h in ("web01", "web02")}
    rc, out, stats = playbook(tmp, ["-i", inv, "-e", extra, "--skip-tags", "site", "-vvv", ENROLL])
    assert stats["web01"]["changed"] == 0 and stats["web02"]["changed"] == 0, out
    assert_no_password(out, argv_log)
    assert {h: connections(tmp / "agents" / h) for h in ("web01", "web02")} == before

    # Check mode (with diff) on a registered group: nothing to do, nothing touched.
    n_calls = len(argv_log.read_text().splitlines())
    rc, out, stats = playbook(tmp, ["-i", inv, "-e", extra, "--skip-tags", "site", "--check", "--diff", ENROLL])
    assert stats["web01"]["changed"] == 0 and stats["web02"]["changed"] == 0, out
    assert {h: connections(tmp / "agents" / h) for h in ("web01", "web02")} == before
    new_calls = [json.loads(line) for line in argv_log.read_text().splitlines()[n_calls:]]
    assert new_calls and all(c[1] == "status" for c in new_calls), new_calls


def test_wrong_fingerprint_fails_clearly(receiver, argv_wrapper, tmp_path):
    wrapper, argv_log = argv_wrapper
    home = tmp_path / "agent"
    rc, out, stats = playbook(tmp_path, [
        "-i", "localhost,", "-c", "local", HERE / "playbooks" / "register_one.yml",
        "-e", json.dumps({
            "server": receiver.address, "site": SITE, "host_name": "web03", "user": REG_USER,
            "password": REG_PASSWORD, "fingerprint": WRONG_FINGERPRINT, "tether_bin": str(wrapper),
            "tether_home": str(home),
        }),
    ], check=False)
    assert rc != 0, out
    assert stats["localhost"]["failed"] == 1, out
    assert "failed [trust]" in out, out
    # The message names the certificate the server presented, so it can be pinned.
    assert receiver.fingerprint.lower() in out.lower() or "sha256:" in out, out
    assert_no_password(out, argv_log)
    assert connections(home) == []
    # Check mode catches the wrong pin too (tether probe: no credentials sent).
    rc, out, stats = playbook(tmp_path, [
        "-i", "localhost,", "-c", "local", "--check", HERE / "playbooks" / "register_one.yml",
        "-e", json.dumps({
            "server": receiver.address, "site": SITE, "host_name": "web03", "user": REG_USER,
            "password": REG_PASSWORD, "fingerprint": WRONG_FINGERPRINT, "tether_bin": str(wrapper),
            "tether_home": str(home),
        }),
    ], check=False)
    assert rc != 0 and "failed [trust]" in out, out
    assert connections(home) == []


def test_conflict_force_and_absent(receiver, argv_wrapper, tmp_path):
    """A registration under another host name: conflict without force, replaced with it;
    state=absent deletes (check mode first), then reports no change."""
    wrapper, argv_log = argv_wrapper
    home = tmp_path / "agent"
    base = {"server": receiver.address, "site": SITE, "user": REG_USER, "password": REG_PASSWORD,
            "fingerprint": receiver.fingerprint, "tether_bin": str(wrapper), "tether_home": str(home)}
    pb = HERE / "playbooks" / "register_one.yml"
    args = ["-i", "localhost,", "-c", "local", pb]
    rc, out, stats = playbook(tmp_path, args + ["-e", json.dumps(dict(base, host_name="web03"))])
    assert stats["localhost"]["changed"] == 1, out
    # Another host name on the same site without force: conflict, nothing changed.
    rc, out, stats = playbook(tmp_path, args + ["-e", json.dumps(dict(base, host_name="web06"))], check=False)
    assert rc != 0 and "[conflict]" in out, out
    assert [c[1] for c in connections(home)] == ["web03"]
    # With force: replaced.
    rc, out, stats = playbook(tmp_path, args + ["-e", json.dumps(dict(base, host_name="web06", force=True))])
    assert stats["localhost"]["changed"] == 1, out
    assert [c[1] for c in connections(home)] == ["web06"]
    # Absent, twice.
    absent = dict(base, host_name="web06", state="absent")
    rc, out, stats = playbook(tmp_path, args + ["--check", "-e", json.dumps(absent)])
    assert stats["localhost"]["changed"] == 1 and [c[1] for c in connections(home)] == ["web06"], out
    rc, out, stats = playbook(tmp_path, args + ["-e", json.dumps(absent)])
    assert stats["localhost"]["changed"] == 1 and connections(home) == [], out
    rc, out, stats = playbook(tmp_path, args + ["-e", json.dumps(absent)])
    assert stats["localhost"]["changed"] == 0, out
    # Present again, as after a reinstall: absent ended the registration on the site too,
    # so the registration-only user enrolls the host again (no identity lock left).
    rc, out, stats = playbook(tmp_path, args + ["-e", json.dumps(dict(base, host_name="web06"))])
    assert stats["localhost"]["changed"] == 1, out
    assert [c[1] for c in connections(home)] == ["web06"]
    assert_no_password(out, argv_log)


def test_registration_through_a_proxy(receiver, argv_wrapper, tmp_path):
    """The proxy option: every call to the site goes through it (CONNECT recorded by a real
    proxy); its credentials reach tether in the environment, never in argv or output."""
    wrapper, argv_log = argv_wrapper
    receiver.cli("host", "add", "ansiblepx01", "--dir", receiver.dir)
    proxy = ConnectProxy(tmp_path).start()
    secret = "Px-secret-7d1e"
    try:
        home = tmp_path / "agent"
        base = {"server": receiver.address, "site": SITE, "user": REG_USER, "password": REG_PASSWORD,
                "fingerprint": receiver.fingerprint, "tether_bin": str(wrapper), "tether_home": str(home),
                "host_name": "ansiblepx01", "proxy": proxy.url("pxuser:" + secret)}
        args = ["-i", "localhost,", "-c", "local", HERE / "playbooks" / "register_one.yml", "-v"]
        rc, out, stats = playbook(tmp_path, args + ["-e", json.dumps(base)])
        assert stats["localhost"]["changed"] == 1, out
        assert receiver.address in proxy.connects(), proxy.connects()
        tunnels = len(proxy.connects())
        # Again: unchanged, and the site was asked through the proxy.
        rc, out2, stats = playbook(tmp_path, args + ["-e", json.dumps(base)])
        assert stats["localhost"]["changed"] == 0, out2
        assert len(proxy.connects()) > tunnels
        rc, out3, stats = playbook(tmp_path, args + ["-e", json.dumps(dict(base, state="absent"))])
        assert stats["localhost"]["changed"] == 1 and connections(home) == [], out3
        for text in (out, out2, out3, argv_log.read_text()):
            assert secret not in text
    finally:
        proxy.stop()


def test_reregisters_when_the_site_revoked_it(receiver, argv_wrapper, tmp_path):
    """A registration the site revoked (tether-receiver unregister) is renewed; then no change."""
    wrapper, argv_log = argv_wrapper
    home = tmp_path / "agent"
    pb = HERE / "playbooks" / "register_one.yml"
    args = ["-i", "localhost,", "-c", "local", pb, "-v", "-e", json.dumps({
        "server": receiver.address, "site": SITE, "host_name": "web05", "user": REG_USER,
        "password": REG_PASSWORD, "fingerprint": receiver.fingerprint, "tether_bin": str(wrapper),
        "tether_home": str(home)})]
    rc, out, stats = playbook(tmp_path, args)
    assert stats["localhost"]["changed"] == 1, out
    rc, out, stats = playbook(tmp_path, args)
    assert stats["localhost"]["changed"] == 0, out
    receiver.cli("unregister", "web05", "--dir", receiver.dir)
    rc, out, stats = playbook(tmp_path, args + ["--check"])
    assert stats["localhost"]["changed"] == 1, out
    assert "the site refuses connection" in out or "the site no longer knows" in out, out
    rc, out, stats = playbook(tmp_path, args)
    assert stats["localhost"]["changed"] == 1, out
    rc, out, stats = playbook(tmp_path, args)
    assert stats["localhost"]["changed"] == 0, out
    assert_no_password(out, argv_log)


def test_new_host_created_pending_approved_declined(receiver, argv_wrapper, tmp_path):
    """mode: new: a rule creates the host (then no change); a held one is pending until
    approved; a declined one fails with [declined]."""
    wrapper, argv_log = argv_wrapper
    receiver.cli("rule", "add", "it-auto", "--match", "it=auto", "--create-in", "/", "--hostname-label",
                 "cmk/hostname", "--dir", receiver.dir)
    receiver.cli("rule", "add", "it-held", "--match", "it=held", "--hold", "--dir", receiver.dir)
    pb = HERE / "playbooks" / "register_new.yml"

    def args(name, labels, **kw):
        extra = {"server": receiver.address, "site": SITE, "user": REG_USER, "password": REG_PASSWORD,
                 "fingerprint": receiver.fingerprint, "tether_bin": str(wrapper),
                 "tether_home": str(tmp_path / name), "labels": labels}
        extra.update(kw)
        return ["-i", "localhost,", "-c", "local", pb, "-v", "-e", json.dumps(extra)]

    auto = args("auto", {"it": "auto", "cmk/hostname": "itnew01"})
    rc, out, stats = playbook(tmp_path, auto)
    assert stats["localhost"]["changed"] == 1 and '"status": "success"' in out, out
    assert [c[1] for c in connections(tmp_path / "auto")] == ["itnew01"]
    rc, out, stats = playbook(tmp_path, auto)
    assert stats["localhost"]["changed"] == 0, out

    held = args("held", {"it": "held", "cmk/hostname": "itnew02"}, wait=False)
    rc, out, stats = playbook(tmp_path, held)
    assert '"status": "pending"' in out, out
    pending = parse_json(receiver.cli("pending", "list", "--json", "--dir", receiver.dir).stdout)
    uuids = [r["uuid"] for r in pending["registrations"]
             if r.get("status") == "pending" and r.get("labels", {}).get("cmk/hostname") == "itnew02"]
    assert len(uuids) == 1, pending
    rc, out, stats = playbook(tmp_path, held[:-1] + [held[-1].replace('"wait": false', '"wait": true, "timeout": 1')],
                              check=False)
    assert rc != 0 and "failed [pending]" in out, out
    receiver.cli("pending", "approve", uuids[0], "--dir", receiver.dir)
    rc, out, stats = playbook(tmp_path, held)
    assert stats["localhost"]["changed"] == 1 and '"status": "success"' in out, out
    assert [c[1] for c in connections(tmp_path / "held")] == ["itnew02"]

    declined = args("declined", {"it": "held", "cmk/hostname": "itnew03"}, wait=False)
    rc, out, stats = playbook(tmp_path, declined)
    pending = parse_json(receiver.cli("pending", "list", "--json", "--dir", receiver.dir).stdout)
    uuid = [r["uuid"] for r in pending["registrations"]
            if r.get("status") == "pending" and r.get("labels", {}).get("cmk/hostname") == "itnew03"][0]
    receiver.cli("pending", "decline", uuid, "--reason", "not in this site", "--dir", receiver.dir)
    rc, out, stats = playbook(tmp_path, declined, check=False)
    assert rc != 0 and "failed [declined]" in out and "not in this site" in out, out
    assert_no_password(out, argv_log)


def test_token_registration(receiver, argv_wrapper, tmp_path):
    """A one-time token reaches tether in the environment, never in argv or output."""
    wrapper, argv_log = argv_wrapper
    created = parse_json(receiver.cli("token", "create", "--host", "tok01", "--json", "--dir", receiver.dir).stdout)
    token = created.get("token") or created.get("secret")
    assert token and ":" in token, created
    home = tmp_path / "agent"
    args = ["-i", "localhost,", "-c", "local", HERE / "playbooks" / "register_one.yml", "-vvv", "-e", json.dumps({
        "server": receiver.address, "site": SITE, "host_name": "tok01", "token": token,
        "fingerprint": receiver.fingerprint, "tether_bin": str(wrapper), "tether_home": str(home)})]
    rc, out, stats = playbook(tmp_path, args)
    assert stats["localhost"]["changed"] == 1, out
    assert [c[1] for c in connections(home)] == ["tok01"]
    rc, out2, stats = playbook(tmp_path, args)
    assert stats["localhost"]["changed"] == 0, out2
    secret = token.split(":", 1)[1]
    assert secret not in out and secret not in out2
    assert secret not in argv_log.read_text()


def test_receiver_apply_site_play(argv_wrapper, tmp_path):
    """The site play of the example converges the registration user and the hosts, idempotently.

    Runs on a site of its own (only `init`), so that it cannot disturb the other tests' site.
    """
    require_binaries()
    if not _receiver_has("apply"):
        pytest.skip("tether-receiver has no apply command yet")
    site = Receiver(tmp_path / "site")
    site.init(users=False)
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    probe = site.cli("apply", "--json", "--dir", site.dir, empty, "--dry-run", check=False)
    if "not implemented" in probe.stdout + probe.stderr:
        pytest.skip("tether-receiver apply is not implemented yet")
    site.address = "127.0.0.1:1"  # not served: apply works on the directory
    wrapper, argv_log = argv_wrapper
    inv, extra = inventory(tmp_path, site, wrapper, ["web01", "web02"])
    rc, out, stats = playbook(tmp_path, ["-i", inv, "-e", extra, "--tags", "site", "--check", "--diff", ENROLL])
    assert stats["site"]["changed"] == 1, out
    rc, out, stats = playbook(tmp_path, ["-i", inv, "-e", extra, "--tags", "site", ENROLL])
    assert stats["site"]["changed"] == 1, out
    rc, out, stats = playbook(tmp_path, ["-i", inv, "-e", extra, "--tags", "site", ENROLL])
    assert stats["site"]["changed"] == 0, out
    assert REG_PASSWORD not in out

    # The whole example: the user the site play created registers both hosts.
    try:
        site.serve()
        inv, extra = inventory(tmp_path, site, wrapper, ["web01", "web02"])
        rc, out, stats = playbook(tmp_path, ["-i", inv, "-e", extra, ENROLL])
        assert stats["site"]["changed"] == 0, out
        assert stats["web01"]["changed"] == 1 and stats["web02"]["changed"] == 1, out
        rc, out, stats = playbook(tmp_path, ["-i", inv, "-e", extra, ENROLL])
        assert sum(s["changed"] for s in stats.values()) == 0, out
        assert_no_password(out, argv_log)
    finally:
        site.stop()


def test_pending_module_decides_with_the_users_rights(tmp_path):
    """tether.agent.pending through the admin API: an approver of folder /a lists only /a's held
    agent, check mode changes nothing, approve and decline are idempotent, another folder's
    entry is not found; the password never reaches argv or the output.

    Runs on a site of its own, so that its rules and users cannot disturb the other tests.
    """
    require_binaries()
    if not _receiver_has("pending") or "--server" not in run([RECEIVER_BIN, "pending", "--help"]).stdout:
        pytest.skip("tether-receiver has no pending --server yet")
    site = Receiver(tmp_path / "site")
    site.init(users=False)

    def admin(*args, **kw):
        return site.cli(*(list(args) + ["--dir", site.dir]), **kw)

    for team in ("a", "b"):
        admin("group", "add", "g" + team)
        admin("folder", "add", "/" + team, "--contact-group", "g" + team)
        admin("rule", "add", "hold-" + team, "--match", "team=" + team, "--hold", "--create-in", "/" + team)
    admin("user", "add", REG_USER, "--role", "agent_registration", "--password-stdin", input=REG_PASSWORD)
    approver_pw = "Approver-pw-7d41e0"
    admin("user", "add", "appa", "--role", "agent_approver", "--contact-group", "ga", "--password-stdin",
          input=approver_pw)
    site.serve()
    try:
        def held(team, host):
            doc = parse_json(run([TETHER_BIN, "register-new", "--json", "--no-wait", "-s", site.address, "-i", SITE,
                                  "-U", REG_USER, "--password-stdin", "--trust-fingerprint", site.fingerprint,
                                  "--agent-labels", "team:" + team, "--agent-labels", "cmk/hostname:" + host],
                                 input=REG_PASSWORD, env={"TETHER_HOME": str(tmp_path / ("agent-" + host))}).stdout)
            assert doc["status"] == "pending", doc
            return doc["uuid"]

        ua1, ua2, ub = held("a", "pa1"), held("a", "pa2"), held("b", "pb1")
        out = tmp_path / "result.json"
        argv_log = tmp_path / "argv.jsonl"
        # Records the receiver's argv, then runs it: the password must never be there.
        wrapper = tmp_path / "tether-receiver"
        wrapper.write_text(
            "#!%s\nimport json, os, sys\nwith open(%r, 'a') as f:\n    f.write(json.dumps(sys.argv) + '\\n')\n"
            "os.execv(%r, [%r] + sys.argv[1:])\n" % (sys.executable, str(argv_log), RECEIVER_BIN, RECEIVER_BIN))
        wrapper.chmod(0o755)

        def task(check=False, **kw):
            if out.exists():
                out.unlink()
            extra = {"server": site.address, "site": SITE, "user": "appa", "password": approver_pw,
                     "fingerprint": site.fingerprint, "receiver_bin": str(wrapper), "out": str(out)}
            extra.update(kw)
            extra = dict((k, v) for k, v in extra.items() if v is not None)
            args = ["-i", "localhost,", "-c", "local", HERE / "playbooks" / "pending.yml", "-e", json.dumps(extra)]
            if check:
                args.append("--check")
            rc, text, stats = playbook(tmp_path, args, check=False)
            assert approver_pw not in text
            return rc, text, (json.loads(out.read_text()) if out.exists() else None)

        def pending_uuids():
            doc = parse_json(admin("pending", "list", "--json").stdout)
            return sorted(r["uuid"] for r in doc["registrations"])

        rc, text, res = task()
        assert rc == 0, text
        assert res["changed"] is False
        assert sorted(r["uuid"] for r in res["pending"]) == sorted([ua1, ua2]), res
        assert all(r["folder"] == "/a" for r in res["pending"]), res

        rc, text, res = task(check=True, action="approve", uuid=ua1)
        assert rc == 0 and res["changed"] is True and res["registration"]["uuid"] == ua1, text
        assert ua1 in pending_uuids(), "check mode changed nothing"

        rc, text, res = task(action="approve", uuid=ua1)
        assert rc == 0 and res["changed"] is True, text
        assert ua1 not in pending_uuids()
        hosts = parse_json(admin("host", "list", "--json").stdout)["hosts"]
        assert [h["folder"] for h in hosts if h["name"] == "pa1"] == ["/a"], hosts
        rc, text, res = task(action="approve", uuid=ua1)
        assert rc == 0 and res["changed"] is False and res["found"] is False, text

        # Password from a file; decline with a reason.
        pwfile = tmp_path / "approver-password"
        pwfile.write_text(approver_pw + "\n")
        rc, text, res = task(action="decline", uuid=ua2, reason="not ours", password=None, password_file=str(pwfile))
        assert rc == 0 and res["changed"] is True, text
        declined = [r for r in parse_json(admin("pending", "list", "--all", "--json").stdout)["registrations"]
                    if r["uuid"] == ua2]
        assert declined[0]["status"] == "declined" and declined[0]["reason"] == "not ours", declined

        # Another folder's entry: not visible, nothing to do, nothing changed.
        rc, text, res = task(action="approve", uuid=ub)
        assert rc == 0 and res["changed"] is False and res["found"] is False, text
        assert ub in pending_uuids()

        rc, text, res = task(password="wrong-password")
        assert rc != 0 and "failed [auth_failed]" in text, text
        rc, text, res = task(fingerprint=WRONG_FINGERPRINT)
        assert rc != 0 and "failed [trust]" in text, text

        argv = argv_log.read_text()
        assert argv.count("--server") >= 6
        assert approver_pw not in argv
    finally:
        site.stop()


def _receiver_has(word):
    proc = run([RECEIVER_BIN, "--help"], check=False)
    return re.search(r"^\s+%s\b" % word, proc.stdout, re.M) is not None
