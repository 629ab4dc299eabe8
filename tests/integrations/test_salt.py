"""The Salt execution and state modules (salt/) with salt-call --local, against a real
tether-receiver and the real tether binary."""

import json
from pathlib import Path

import pytest

from integration_helpers import ConnectProxy, REG_PASSWORD, REG_USER, SALT_DIR, SITE, TETHER_BIN, WRONG_FINGERPRINT, parse_json, run, tool

MINION_ID = "salt01"


def minion(tmp, pillar):
    """A masterless minion config in tmp: file_roots = salt/examples, modules and states from salt/."""
    conf = tmp / "conf"
    root = tmp / "root"
    pillar_dir = tmp / "pillar"
    for d in (conf, root, pillar_dir):
        d.mkdir(parents=True, exist_ok=True)
    (conf / "minion").write_text(json.dumps({
        "id": MINION_ID,
        "file_client": "local",
        "root_dir": str(root),
        "cachedir": str(root / "cache"),
        "pki_dir": str(root / "pki"),
        "sock_dir": str(root / "sock"),
        "log_file": str(root / "minion.log"),
        "module_dirs": [str(SALT_DIR / "_modules")],
        "states_dirs": [str(SALT_DIR / "_states")],
        "file_roots": {"base": [str(SALT_DIR / "examples")]},
        "pillar_roots": {"base": [str(pillar_dir)]},
        "grains_cache": False,
        "enable_fqdns_grains": False,
    }))
    (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - tether\n")
    (pillar_dir / "tether.sls").write_text(json.dumps({"tether": pillar}))
    return conf


def salt_call(conf, *args, check=False):
    proc = run([tool("salt-call"), "--local", "-c", conf, "--out", "json", "--log-level", "warning"] + list(args),
               check=False, timeout=300)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError("salt-call %s failed (%s):\n%s" % (args, proc.returncode, out))
    try:
        doc = json.loads(proc.stdout)["local"]
    except (ValueError, KeyError):
        doc = None
    return proc.returncode, doc, out


def only_state(doc):
    assert isinstance(doc, dict) and len(doc) == 1, doc
    return list(doc.values())[0]


def connections(home):
    proc = run([TETHER_BIN, "status", "--json", "--no-query-remote"], env={"TETHER_HOME": str(home)})
    return sorted((c["uuid"], c["host_name"], c["site"]) for c in parse_json(proc.stdout)["connections"])


@pytest.fixture
def pillar(receiver, argv_wrapper, tmp_path):
    wrapper, argv_log = argv_wrapper
    home = tmp_path / "agent"
    home.mkdir()
    return {
        "server": receiver.address,
        "site": SITE,
        "user": REG_USER,
        "registration_password": REG_PASSWORD,
        "fingerprint": receiver.fingerprint,
        "tether_bin": str(wrapper),
        "tether_home": str(home),
    }


def test_salt_registered_test_apply_and_idempotent(pillar, receiver, argv_wrapper, tmp_path):
    wrapper, argv_log = argv_wrapper
    home = Path(pillar["tether_home"])
    conf = minion(tmp_path, pillar)

    # test=True: result None, a comment saying what would change, nothing changed.
    rc, doc, out = salt_call(conf, "state.apply", "tether", "test=True")
    st = only_state(doc)
    assert st["result"] is None, out
    assert "Would register" in st["comment"] and MINION_ID in st["comment"], st
    assert connections(home) == []

    rc, doc, out = salt_call(conf, "state.apply", "tether", check=True)
    st = only_state(doc)
    assert st["result"] is True, out
    assert st["changes"]["connection"]["new"]["host_name"] == MINION_ID, st
    conns = connections(home)
    assert [c[1] for c in conns] == [MINION_ID]
    assert REG_PASSWORD not in out

    # Second run: no changes.
    rc, doc, out = salt_call(conf, "state.apply", "tether", check=True)
    st = only_state(doc)
    assert st["result"] is True and st["changes"] == {}, st
    assert connections(home) == conns
    # test=True on a registered minion: nothing to do.
    rc, doc, out = salt_call(conf, "state.apply", "tether", "test=True", check=True)
    st = only_state(doc)
    assert st["result"] is True and st["changes"] == {}, st

    # The execution module.
    rc, doc, out = salt_call(conf, "tether.status", "query_remote=True",
                             "tether_bin=" + str(wrapper), "tether_home=" + str(home), check=True)
    assert doc["ok"] is True and doc["connections"][0]["remote"]["status"] == "registered", doc

    # The site revokes the registration: test=True says so, apply renews it, then no changes.
    receiver.cli("unregister", MINION_ID, "--dir", receiver.dir)
    rc, doc, out = salt_call(conf, "state.apply", "tether", "test=True")
    st = only_state(doc)
    assert st["result"] is None and ("refuses" in st["comment"] or "no longer knows" in st["comment"]), st
    rc, doc, out = salt_call(conf, "state.apply", "tether", check=True)
    st = only_state(doc)
    assert st["result"] is True and st["changes"], st
    rc, doc, out = salt_call(conf, "state.apply", "tether", check=True)
    st = only_state(doc)
    assert st["result"] is True and st["changes"] == {}, st
    conns = connections(home)
    assert st["comment"].rsplit("connection ", 1)[-1].rstrip(")") in [c[0] for c in conns], (st, conns)

    # Absent: test, real, again.
    rc, doc, out = salt_call(conf, "state.apply", "tether-absent", "test=True")
    st = only_state(doc)
    assert st["result"] is None and "Would delete" in st["comment"], st
    assert connections(home) == conns
    rc, doc, out = salt_call(conf, "state.apply", "tether-absent", check=True)
    assert conns[0][0] in only_state(doc)["changes"]["deleted"], doc
    rc, doc, out = salt_call(conf, "state.apply", "tether-absent", check=True)
    assert only_state(doc)["changes"] == {}, doc
    assert connections(home) == []

    assert REG_PASSWORD not in argv_log.read_text()
    assert REG_PASSWORD not in (tmp_path / "root" / "minion.log").read_text() if (
        tmp_path / "root" / "minion.log").exists() else True


def test_salt_wrong_fingerprint(pillar, tmp_path):
    conf = minion(tmp_path, dict(pillar, fingerprint=WRONG_FINGERPRINT))
    rc, doc, out = salt_call(conf, "state.apply", "tether")
    assert rc != 0
    st = only_state(doc)
    assert st["result"] is False and "failed [trust]" in st["comment"], st
    assert REG_PASSWORD not in out
    assert connections(Path(pillar["tether_home"])) == []
    # test=True catches the wrong pin too (tether probe: no credentials sent).
    rc, doc, out = salt_call(conf, "state.apply", "tether", "test=True")
    st = only_state(doc)
    assert st["result"] is False and "failed [trust]" in st["comment"], st


def test_salt_through_a_proxy_from_pillar(pillar, receiver, argv_wrapper, tmp_path):
    """``tether:proxy`` in pillar: every call goes through the proxy (recorded by a real
    CONNECT proxy), its credentials only in tether's environment."""
    wrapper, argv_log = argv_wrapper
    receiver.cli("host", "add", "saltpx01", "--dir", receiver.dir)
    proxy = ConnectProxy(tmp_path).start()
    secret = "Px-secret-5b2a"
    try:
        home = Path(pillar["tether_home"])
        conf = minion(tmp_path, dict(pillar, host_name="saltpx01", proxy=proxy.url("pxuser:" + secret)))
        rc, doc, out = salt_call(conf, "state.apply", "tether", check=True)
        st = only_state(doc)
        assert st["result"] is True and st["changes"], st
        assert receiver.address in proxy.connects(), proxy.connects()
        tunnels = len(proxy.connects())
        rc, doc, out2 = salt_call(conf, "state.apply", "tether", check=True)
        assert only_state(doc)["changes"] == {}, doc
        assert len(proxy.connects()) > tunnels
        rc, doc, out3 = salt_call(conf, "state.apply", "tether-absent", check=True)
        assert only_state(doc)["changes"]["deleted"], doc
        assert connections(home) == []
        for text in (out, out2, out3, argv_log.read_text()):
            assert secret not in text
    finally:
        proxy.stop()


def test_salt_delete_of_nothing(pillar, tmp_path):
    """tether delete fails with [not_found] when nothing matches; missing_ok makes it a no-op
    (what tether.absent uses)."""
    conf = minion(tmp_path, pillar)
    common = ["tether_bin=" + pillar["tether_bin"], "tether_home=" + pillar["tether_home"]]
    rc, doc, out = salt_call(conf, "tether.delete", "nosuch", *common)
    assert rc != 0 and "[not_found]" in out, out
    rc, doc, out = salt_call(conf, "tether.delete", "nosuch", "missing_ok=True", *common, check=True)
    assert doc == {"ok": True, "changed": False, "deleted": []}, doc
