"""Unit checks of the shared helpers (no binaries needed)."""

import importlib.util
import sys

from integration_helpers import COLLECTIONS, SALT_DIR

sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.tether.agent.plugins.module_utils import tether_cli  # noqa: E402


def load_salt_module():
    spec = importlib.util.spec_from_file_location("salt_tether_module", str(SALT_DIR / "_modules" / "tether.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CONNS = [
    {"uuid": "a", "server": "mon.example.com:8000", "site": "prod", "host_name": "web01"},
    {"uuid": "b", "server": "mon.example.com:8001", "site": "test", "host_name": "web01"},
    {"uuid": "c", "server": "[::1]:8000", "site": "prod", "host_name": "web02"},
]


def test_split_server():
    assert tether_cli.split_server("Mon.example.com:8000") == ("mon.example.com", 8000)
    assert tether_cli.split_server("mon") == ("mon", None)
    assert tether_cli.split_server("[::1]:8000") == ("::1", 8000)
    assert tether_cli.split_server("::1") == ("::1", None)


def test_find_connections():
    uuids = lambda cs: [c["uuid"] for c in cs]  # noqa: E731
    assert uuids(tether_cli.find_connections(CONNS, "mon.example.com", "prod", "web01")) == ["a"]
    assert uuids(tether_cli.find_connections(CONNS, "mon.example.com:8001")) == ["b"]
    assert uuids(tether_cli.find_connections(CONNS, "mon.example.com")) == ["a", "b"]
    assert uuids(tether_cli.find_connections(CONNS, "[::1]", "prod")) == ["c"]
    assert uuids(tether_cli.find_connections(CONNS, host_name="web01")) == ["a", "b"]
    assert tether_cli.find_connections(CONNS, "other", "prod") == []


def test_error_message_names_code_and_fingerprints():
    err = {"code": "trust", "message": "certificate mismatch", "server_fingerprints": ["sha256:ab"],
           "hint": "pin one"}
    msg = tether_cli.TetherError("tether register", err, rc=8).message()
    assert msg.startswith("tether register failed [trust]: certificate mismatch")
    assert "sha256:ab" in msg and "pin one" in msg
    salt_mod = load_salt_module()
    assert salt_mod.error_message("register", err, 8) == msg


def test_parse_document():
    assert tether_cli.parse_document('{"ok": true}') == {"ok": True}
    assert tether_cli.parse_document('noise\n{"ok": false,\n "error": {}}') == {"ok": False, "error": {}}
    assert tether_cli.parse_document("") is None
    assert tether_cli.parse_document("[1]") is None
