# -*- coding: utf-8 -*-
"""
States for the tether agent: ``tether.registered``, ``tether.absent`` and ``tether.listening``.

Both read the current state first (``tether status --json --no-query-remote``, and
for an existing registration the site's view of it) and run ``tether register``,
``register-new`` or ``delete`` only on a difference. With ``test=True`` they
return ``result: None`` and a comment saying what would change, and run nothing
that changes anything.

Keep secrets in pillar and name them with ``password_pillar`` / ``token_pillar``
(a ``:``-separated pillar path): the secret then never appears in the rendered
SLS, the state's arguments or the job's return. The password reaches ``tether``
on standard input, the token in the environment, never the command line.

.. code-block:: yaml

    web01:
      tether.registered:
        - server: monitoring.example.com:8000
        - site: prod
        - user: agent_registration
        - password_pillar: tether:registration_password
        - trust_fingerprint: sha256:3f1c...
"""

import socket
import time

import salt.utils.data
from salt.exceptions import CommandExecutionError

try:  # Salt >= 3008 keeps pillar in masking containers
    from salt.utils.secret import expose as _expose
except ImportError:  # pragma: no cover - older Salt

    def _expose(value):
        return value

__virtualname__ = "tether"


def __virtual__():
    if "tether.status" in __salt__:
        return __virtualname__
    return (False, "the tether execution module is not loaded")


def _split_server(server):
    server = (server or "").strip()
    if server.startswith("["):
        host, _sep, rest = server[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif server.count(":") == 1:
        host, port = server.split(":")
    else:
        host, port = server, None
    try:
        port = int(port) if port else None
    except ValueError:
        port = None
    return host.lower(), port


def _same_server(wanted, actual):
    """A server given without a port matches any port of that host."""
    whost, wport = _split_server(wanted)
    ahost, aport = _split_server(actual)
    return whost == ahost and (wport is None or aport is None or wport == aport)


def _find(items, server=None, site=None, host_name=None):
    found = []
    for item in items or []:
        if server and not _same_server(server, item.get("server", "")):
            continue
        if site and item.get("site") != site:
            continue
        if host_name and item.get("host_name") != host_name:
            continue
        found.append(item)
    return found


def _summary(conn):
    if not conn:
        return {}
    keys = ("uuid", "server", "site", "host_name", "connection_mode", "trust", "key_type")
    summary = {k: conn.get(k) for k in keys if conn.get(k) is not None}
    cert = conn.get("certificate") or {}
    for k in ("not_after", "valid"):
        if k in cert:
            summary["certificate_" + k] = cert[k]
    return summary


def _secret(value, pillar_key, what):
    if value is not None and pillar_key:
        raise CommandExecutionError("give {0} or {0}_pillar, not both".format(what))
    if pillar_key:
        # Read __pillar__ directly: pillar.get redacts values on Salt >= 3008.
        value = _expose(salt.utils.data.traverse_dict_and_list(__pillar__, pillar_key, None, ":"))
        if value is None:
            raise CommandExecutionError("pillar {} (for {}) is not set".format(pillar_key, what))
    return value


def _message(exc):
    """The error's own message, without the "Additional info follows" dump of its info."""
    return getattr(exc, "error", None) or getattr(exc, "strerror", None) or str(exc)


# HTTP answers of a site that mean it will not accept a connection any more
# (e.g. a revoked certificate), as opposed to errors that say nothing about it.
_REFUSED = (400, 401, 403, 404, 410)


def _remote_statuses(common):
    """uuid -> the site's view of that connection (``remote`` of ``tether status``)."""
    doc = __salt__["tether.status"](query_remote=True, **common)
    return {c.get("uuid"): c.get("remote") or {} for c in doc.get("connections") or []}


def _renew_reason(conn, remotes, ret):
    """Why a local registration must be renewed (invalid certificate, unknown to or refused by
    the site), or None."""
    cert = conn.get("certificate") or {}
    if cert.get("valid") is False:
        return "the certificate of connection {} is not valid (not after {})".format(
            conn.get("uuid"), cert.get("not_after")
        )
    if remotes is None:
        return None
    remote = remotes.get(conn.get("uuid")) or {}
    err = remote.get("error") or {}
    if remote.get("status") == "not_registered":
        return "the site no longer knows connection {}".format(conn.get("uuid"))
    if remote.get("status") == "rejected" or (remote.get("status") == "error" and err.get("http_status") in _REFUSED):
        return "the site refuses connection {}: {}".format(conn.get("uuid"), err.get("message"))
    if remote.get("status") == "error":
        ret.setdefault("warnings", []).append(
            "could not ask the site about connection {}: [{}] {}".format(
                conn.get("uuid"), err.get("code"), err.get("message")
            )
        )
    return None


def registered(
    name,
    server,
    site,
    host_name=None,
    mode="existing",
    user=None,
    password=None,
    password_pillar=None,
    token=None,
    token_pillar=None,
    trust_fingerprint=None,
    root_ca=None,
    trust_cert=False,
    force=False,
    key_type=None,
    agent_labels=None,
    wait=True,
    timeout=None,
    query_remote=True,
    tether_bin=None,
    tether_home=None,
    proxy=None,
):
    """
    Ensure the agent is registered with ``site`` on ``server``.

    name
        The host name on the site (``mode: existing``), unless ``host_name`` is given.

    server
        The site's agent receiver, ``HOST`` or ``HOST:PORT``.

    site
        The site's name.

    mode
        ``existing`` (``tether register``, the site monitors the host already) or
        ``new`` (``tether register-new``: the site creates the host by its rules,
        with ``agent_labels``; ``host_name`` is then only used for matching).

    user / password / password_pillar / token / token_pillar
        Credentials of a user with registration rights. Prefer the ``*_pillar``
        forms: a colon-separated pillar path read on the minion.

    trust_fingerprint / root_ca / trust_cert
        How to trust the site's certificate: a pinned ``sha256:HEX`` fingerprint,
        a CA file, or (labs only) anything.

    force
        Replace a registration of this host under another host name on the same site.

    key_type
        ``ec``, ``rsa2048`` or ``rsa4096``.

    wait / timeout
        ``mode: new`` only: wait up to ``timeout`` seconds for the site's decision;
        ``wait: False`` accepts a pending registration (run again to resume).

    query_remote
        Ask the site whether it still knows an existing local registration.

    tether_bin / tether_home
        The binary and the agent's state directory (``TETHER_HOME``).

    proxy
        How tether reaches the receiver: ``direct``, ``auto`` (``HTTPS_PROXY`` except
        hosts in ``NO_PROXY``) or ``http://HOST:PORT``; default: ``tether.proxy`` in the
        minion config or pillar, else ``proxy`` in tether.toml, else direct. Handed to
        tether in the environment, never on the command line.
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    if mode not in ("existing", "new"):
        ret["comment"] = "mode must be existing or new, not {!r}".format(mode)
        return ret
    if mode == "existing" and not host_name:
        host_name = name
    common = {"tether_bin": tether_bin, "tether_home": tether_home, "proxy": proxy}
    try:
        password = _secret(password, password_pillar, "password")
        token = _secret(token, token_pillar, "token")
        doc = __salt__["tether.status"](query_remote=False, **common)
        conns = doc.get("connections") or []
        same = _find(conns, server, site, host_name)
        others = [c for c in _find(conns, server, site) if c not in same] if mode == "existing" else []
        pending = _find(doc.get("pending") or [], server, site) if mode == "new" else []
        before = _summary(same[0] if same else (others[0] if others else None))

        if same:
            remotes = _remote_statuses(common) if query_remote else None
            reasons = [_renew_reason(c, remotes, ret) for c in same]
            healthy = [c for c, r in zip(same, reasons) if r is None]
            if healthy:
                ret["result"] = True
                ret["comment"] = "Already registered with {}/{} as {} (connection {})".format(
                    server, site, healthy[0].get("host_name"), healthy[0].get("uuid")
                )
                return ret
            reason = reasons[0]
        elif others and not force:
            other = others[0]
            ret["comment"] = (
                "tether register failed [conflict]: this host is already registered with {}/{} as {!r} "
                "(connection {}); set force: True to replace it".format(
                    other.get("server"), other.get("site"), other.get("host_name"), other.get("uuid")
                )
            )
            return ret
        elif others:
            reason = "replaces the registration as {!r}".format(others[0].get("host_name"))
        elif pending:
            reason = "resumes the pending registration {}".format(pending[0].get("uuid"))
        else:
            reason = "not registered with {}/{}".format(server, site)

        if __opts__.get("test"):
            # Prove the pinned trust without credentials, so test=True catches a wrong pin.
            if trust_fingerprint or root_ca or trust_cert:
                __salt__["tether.probe"](
                    server, site, trust_fingerprint=trust_fingerprint, root_ca=root_ca, trust_cert=trust_cert, **common
                )
            after = dict(before)
            after.pop("uuid", None)
            after.update({"server": server, "site": site})
            if host_name:
                after["host_name"] = host_name
            ret["result"] = None
            ret["comment"] = "Would register with {}/{}{}: {}".format(
                server, site, " as " + host_name if host_name else "", reason
            )
            ret["changes"] = {"connection": {"old": before, "new": after}}
            return ret

        creds = {"user": user, "password": password, "token": token}
        trust = {"trust_fingerprint": trust_fingerprint, "root_ca": root_ca, "trust_cert": trust_cert}
        if mode == "existing":
            res = __salt__["tether.register"](
                server, site, host_name, force=force, key_type=key_type, **dict(creds, **dict(trust, **common))
            )
            action = res.get("action")
        else:
            res = __salt__["tether.register_new"](
                server,
                site,
                agent_labels=agent_labels,
                key_type=key_type,
                wait=wait,
                timeout=timeout,
                **dict(creds, **dict(trust, **common))
            )
            action = res.get("status")
    except CommandExecutionError as exc:
        ret["comment"] = _message(exc)
        return ret

    conn = res.get("connection")
    ret["result"] = True
    if res.get("changed"):
        ret["changes"] = {"connection": {"old": before, "new": _summary(conn)}}
        if action == "pending":
            ret["changes"]["status"] = "pending"
    if action == "pending":
        ret["comment"] = "Registration with {}/{} is pending the site's decision; apply again to resume".format(
            server, site
        )
    elif res.get("changed"):
        ret["comment"] = "Registered with {}/{} as {} ({}; {})".format(
            server, site, (conn or {}).get("host_name"), action, reason
        )
    else:
        ret["comment"] = "Already registered with {}/{}".format(server, site)
    return ret


def absent(name, server=None, site=None, host_name=None, tether_bin=None, tether_home=None, proxy=None):
    """
    Ensure the agent has no registration matching ``server``, ``site`` and ``host_name``
    (each optional; with none of them, ``name`` is the host name to match).
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    if not (server or site or host_name):
        host_name = name
    common = {"tether_bin": tether_bin, "tether_home": tether_home, "proxy": proxy}
    try:
        doc = __salt__["tether.status"](query_remote=False, **common)
        matches = _find(doc.get("connections") or [], server, site, host_name)
        if not matches:
            ret["result"] = True
            ret["comment"] = "No matching registration"
            return ret
        old = [_summary(c) for c in matches]
        if __opts__.get("test"):
            ret["result"] = None
            ret["comment"] = "Would delete {} registration(s): {}".format(
                len(matches), ", ".join(c.get("uuid", "?") for c in matches)
            )
            ret["changes"] = {"connections": {"old": old, "new": []}}
            return ret
        deleted = []
        for conn in matches:
            # Gone since the status above counts as absent, not as a failure.
            res = __salt__["tether.delete"](conn["uuid"], missing_ok=True, **common)
            deleted.extend(res.get("deleted") or [])
    except CommandExecutionError as exc:
        ret["comment"] = _message(exc)
        return ret
    ret["result"] = True
    if deleted:
        ret["changes"] = {"connections": {"old": old, "new": []}, "deleted": deleted}
        ret["comment"] = "Deleted {} registration(s)".format(len(deleted))
    else:
        ret["comment"] = "No matching registration"
    return ret


def listening(name, port=6556, host="127.0.0.1", timeout=60):
    """
    Wait until the tether daemon accepts TCP connections on ``host:port`` (``name`` is a
    label). Changes nothing, so it never reports changes; with ``test=True`` it checks once
    and answers ``None`` (not ``False``) when the port is closed, since the states before it
    would only then have started the daemon.
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    deadline = time.time() + (0 if __opts__.get("test") else float(timeout))
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            ret["result"] = True
            ret["comment"] = "{}:{} accepts connections".format(host, port)
            return ret
        except (OSError, ValueError) as exc:
            if time.time() >= deadline:
                if __opts__.get("test"):
                    ret["result"] = None
                    ret["comment"] = "{}:{} does not answer yet ({}); would wait up to {} s".format(
                        host, port, exc, timeout)
                else:
                    ret["comment"] = "{}:{} did not accept connections within {} s: {}".format(
                        host, port, timeout, exc)
                return ret
        time.sleep(0.5)
