"""The Ansible collection as a tarball: `ansible-galaxy collection build`, then
`ansible-galaxy collection install` into a temporary path, and the installed copy works."""

import json
import re
import tarfile

from integration_helpers import COLLECTION, REPO, run, tool


def cargo_version():
    text = (REPO / "Cargo.toml").read_text()
    return re.search(r'^version = "([^"]+)"$', text, re.M).group(1)


def test_collection_builds_installs_and_documents_its_modules(tmp_path):
    version = cargo_version()
    galaxy = tool("ansible-galaxy")
    out = tmp_path / "dist"
    run([galaxy, "collection", "build", "--output-path", out, COLLECTION])
    tarball = out / ("tether-agent-%s.tar.gz" % version)
    assert tarball.is_file(), "built: %s" % sorted(p.name for p in out.iterdir())

    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == ("tether", "agent", version)
    assert info["license"] == ["GPL-2.0-only"]
    assert info["authors"] and info["repository"]
    for module in ("registration", "status", "receiver_apply"):
        assert "plugins/modules/%s.py" % module in names
    assert "plugins/module_utils/tether_cli.py" in names
    # Build leftovers and VCS files stay out of the tarball.
    assert not [n for n in names if n.startswith("tests/output") or n.endswith((".gitignore", ".tar.gz"))]

    dest = tmp_path / "collections"
    run([galaxy, "collection", "install", "--offline", "-p", dest, tarball])
    installed = dest / "ansible_collections" / "tether" / "agent"
    assert json.loads((installed / "MANIFEST.json").read_text())["collection_info"]["version"] == version

    # The installed copy, not the repository's, answers ansible-doc.
    env = {"ANSIBLE_COLLECTIONS_PATH": str(dest)}
    listing = run([tool("ansible-galaxy"), "collection", "list", "--format", "json"], env=env)
    found = json.loads(listing.stdout)
    assert found[str(dest / "ansible_collections")]["tether.agent"]["version"] == version
    doc = run([tool("ansible-doc"), "--json", "tether.agent.registration"], env=env)
    assert "tether.agent.registration" in json.loads(doc.stdout)
