# -*- coding: utf-8 -*-
"""
Execution module for the tether agent (Checkmk-compatible agent registration).

Every function runs the ``tether`` binary with a list argv (never a shell) and
``--json``, and returns the single JSON document it prints. A failure document
(``{"ok": false, "error": {...}}``) raises CommandExecutionError whose message
names ``error.code``; the document itself is in the exception's ``info``.

Secrets never reach the command line: the password goes to ``tether`` on
standard input (``--password-stdin``) and the token in the environment
(``TETHER_TOKEN``). Command output is not logged.

Configuration (all optional), in the minion config or pillar:

.. code-block:: yaml

    tether.bin: /usr/bin/tether        # else $TETHER_BIN, else "tether" in PATH
    tether.home: /var/lib/tether       # else $TETHER_HOME, else tether's default
    tether.proxy: auto                 # direct, auto (HTTPS_PROXY/NO_PROXY) or http://HOST:PORT;
                                       # else proxy in tether.toml, else direct

CLI examples:

.. code-block:: bash

    salt '*' tether.status
    salt '*' tether.status query_remote=False
    salt '*' tether.delete monitoring.example.com:8000/prod
"""

import json
import logging
import os
import subprocess

try:
    from salt.exceptions import CommandExecutionError
except ImportError:  # pragma: no cover - only outside Salt
    class CommandExecutionError(Exception):
        def __init__(self, message, info=None):
            super().__init__(message)
            self.info = info


log = logging.getLogger(__name__)

__virtualname__ = "tether"

EXIT_CODES = {
    0: "ok",
    1: "internal",
    2: "usage",
    3: "auth_failed",
    4: "permission_denied",
    5: "host_not_found",
    6: "wrong_site",
    7: "conflict",
    8: "trust",
    9: "network",
    10: "pending",
    11: "declined",
    12: "local_state",
    13: "protocol",
    14: "not_found",
    15: "unsupported",
    16: "not_registered",
    17: "unknown_site",
}


def __virtual__():
    return __virtualname__


def _opt(name):
    """A setting from the minion config, then pillar (``tether.NAME`` or ``tether:NAME``)."""
    opts = globals().get("__opts__") or {}
    value = opts.get("tether." + name)
    if value is None:
        pillar = globals().get("__pillar__") or {}
        value = pillar.get("tether." + name)
        if value is None and isinstance(pillar.get("tether"), dict):
            value = pillar["tether"].get(name)
    return value


def _binary(tether_bin=None):
    return tether_bin or _opt("bin") or os.environ.get("TETHER_BIN") or "tether"


def error_message(command, error, rc=None):
    """One line naming the error code and message, plus the server's fingerprints and hint."""
    error = error or {}
    code = error.get("code") or EXIT_CODES.get(rc, "internal")
    msg = "tether {} failed [{}]: {}".format(command, code, error.get("message") or "no message")
    if error.get("http_status"):
        msg += " (HTTP {})".format(error["http_status"])
    if error.get("presented_certificates"):
        msg += "; the server presented: " + ", ".join(
            "{} {}".format(c.get("role", "").replace("_", " "), c.get("fingerprint"))
            for c in error["presented_certificates"]
        )
    elif error.get("server_fingerprints"):
        msg += "; the server presented: " + ", ".join(error["server_fingerprints"])
    if error.get("hint"):
        msg += "; hint: " + error["hint"]
    return msg


def _parse(out):
    out = (out or "").strip()
    if not out:
        return None
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
        lines = out.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("{"):
                try:
                    doc = json.loads("\n".join(lines[i:]))
                    break
                except ValueError:
                    continue
    return doc if isinstance(doc, dict) else None


def _exec(argv, stdin=None, env=None):
    """Runs argv without a shell; returns (rc, stdout, stderr). Nothing of it is logged."""
    environ = dict(os.environ)
    environ.update(env or {})
    log.debug("tether: running %s", argv[:2])
    try:
        proc = subprocess.run(
            argv,
            input=stdin if stdin is not None else "",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
            universal_newlines=True,
            check=False,
        )
    except OSError as exc:
        raise CommandExecutionError(
            "cannot run {}: {}".format(argv[0], exc),
            info={"ok": False, "error": {"code": "not_found", "message": str(exc)}},
        )
    return proc.returncode, proc.stdout, proc.stderr


def _run(subcommand, args=None, stdin=None, env=None, tether_bin=None, tether_home=None, allow_fail=False,
         proxy=None):
    """Runs ``tether SUBCOMMAND --json ARGS`` and returns its document.

    Raises CommandExecutionError on a failure document unless ``allow_fail``.
    """
    argv = [_binary(tether_bin), subcommand, "--json"] + [str(a) for a in (args or [])]
    environ = dict(env or {})
    home = tether_home or _opt("home")
    if home:
        environ["TETHER_HOME"] = str(home)
    # In the environment, not in argv: a proxy URL may carry credentials.
    proxy = proxy or _opt("proxy")
    if proxy:
        environ["TETHER_PROXY"] = str(proxy)
    rc, out, err = _exec(argv, stdin=stdin, env=environ)
    doc = _parse(out)
    if doc is None:
        doc = {
            "ok": False,
            "error": {
                "code": EXIT_CODES.get(rc, "internal"),
                "message": "no JSON document on stdout (exit code {}): {}".format(
                    rc, (err or out or "").strip()[-2000:]
                ),
            },
        }
    if doc.get("ok") is not True and (doc.get("ok") is False or rc != 0):
        doc["ok"] = False
        doc.setdefault("error", {"code": EXIT_CODES.get(rc, "internal"), "message": (err or "").strip()})
        doc["rc"] = rc
        if allow_fail:
            return doc
        raise CommandExecutionError(error_message(subcommand, doc["error"], rc), info=doc)
    return doc


def _trust_args(trust_fingerprint=None, root_ca=None, trust_cert=False):
    given = [x for x in (trust_fingerprint, root_ca, trust_cert) if x]
    if len(given) > 1:
        raise CommandExecutionError("give only one of trust_fingerprint, root_ca, trust_cert")
    args = []
    if trust_fingerprint:
        args += ["--trust-fingerprint", trust_fingerprint]
    if root_ca:
        args += ["--root-ca", root_ca]
    if trust_cert:
        args.append("--trust-cert")
    return args


def _secret_args(user=None, password=None, token=None):
    args, stdin, env = [], None, {}
    if user:
        args += ["-U", user]
    if password is not None:
        args.append("--password-stdin")
        stdin = str(password)
    if token is not None:
        env["TETHER_TOKEN"] = str(token)
    return args, stdin, env


def status(query_remote=True, tether_bin=None, tether_home=None, proxy=None):
    """
    The document of ``tether status --json``: connections (each with its site's view in
    ``remote`` when ``query_remote``), pending new-host registrations, agent source health.

    CLI example:

    .. code-block:: bash

        salt '*' tether.status query_remote=False
    """
    args = [] if query_remote else ["--no-query-remote"]
    return _run("status", args, tether_bin=tether_bin, tether_home=tether_home, proxy=proxy)


def probe(
    server, site, trust_fingerprint=None, root_ca=None, trust_cert=False, tether_bin=None, tether_home=None, proxy=None
):
    """
    Check that the receiver is reachable and trusted as given (``tether probe --json``):
    no credentials are sent and nothing is stored. Fails with ``[trust]`` on a wrong pin.

    CLI example:

    .. code-block:: bash

        salt '*' tether.probe monitor.example.com:8000 mysite trust_fingerprint=sha256:...
    """
    args = ["-s", server, "-i", site] + _trust_args(trust_fingerprint, root_ca, trust_cert)
    return _run("probe", args, tether_bin=tether_bin, tether_home=tether_home, proxy=proxy)


def register(
    server,
    site,
    host_name,
    user=None,
    password=None,
    token=None,
    trust_fingerprint=None,
    root_ca=None,
    trust_cert=False,
    force=False,
    key_type=None,
    query_remote=True,
    tether_bin=None,
    tether_home=None,
    proxy=None,
):
    """
    Registers this host for the existing host ``host_name`` of ``site`` on ``server``
    (``tether register``). Idempotent: returns ``changed: False`` when already registered.
    The password goes to tether on stdin, the token in the environment.

    CLI example (prefer the ``tether.registered`` state with ``password_pillar``: a
    password given on salt's command line ends up in the job cache):

    .. code-block:: bash

        salt-call tether.register monitoring.example.com:8000 prod web01 \\
            user=agent_registration token=1:... trust_fingerprint=sha256:...
    """
    sargs, stdin, env = _secret_args(user, password, token)
    args = ["-s", server, "-i", site, "-H", host_name] + sargs
    args += _trust_args(trust_fingerprint, root_ca, trust_cert)
    if key_type:
        args += ["--key-type", key_type]
    if force:
        args.append("--force")
    if not query_remote:
        args.append("--no-query-remote")
    return _run(
        "register", args, stdin=stdin, env=env, tether_bin=tether_bin, tether_home=tether_home, proxy=proxy
    )


def register_new(
    server,
    site,
    user=None,
    password=None,
    token=None,
    trust_fingerprint=None,
    root_ca=None,
    trust_cert=False,
    agent_labels=None,
    key_type=None,
    wait=True,
    timeout=None,
    tether_bin=None,
    tether_home=None,
    proxy=None,
):
    """
    Asks ``site`` to create this host (``tether register-new``) with ``agent_labels``
    (a dict). Returns ``status: success`` with the connection, or ``status: pending``
    with ``wait=False``; raises on ``declined`` and, after ``timeout`` seconds, ``pending``.
    Running it again resumes a pending registration.

    CLI example:

    .. code-block:: bash

        salt-call tether.register_new monitoring.example.com prod user=agent_registration \\
            agent_labels='{"os": "linux"}' trust_fingerprint=sha256:... wait=False
    """
    sargs, stdin, env = _secret_args(user, password, token)
    args = ["-s", server, "-i", site] + sargs
    args += _trust_args(trust_fingerprint, root_ca, trust_cert)
    if isinstance(agent_labels, str):
        agent_labels = json.loads(agent_labels)
    for key, value in sorted((agent_labels or {}).items()):
        args += ["--agent-labels", "{}:{}".format(key, value)]
    if key_type:
        args += ["--key-type", key_type]
    if not wait:
        args.append("--no-wait")
    elif timeout is not None:
        args += ["--timeout", str(int(timeout))]
    return _run(
        "register-new", args, stdin=stdin, env=env, tether_bin=tether_bin, tether_home=tether_home, proxy=proxy
    )


def delete(connection, missing_ok=False, tether_bin=None, tether_home=None, proxy=None):
    """
    Deletes the local connections matching ``connection``: a UUID, a host name or
    ``SERVER/SITE`` (``tether delete``). When nothing matches, tether fails with
    ``[not_found]``; with ``missing_ok=True`` that is ``changed: False`` instead.

    CLI example:

    .. code-block:: bash

        salt '*' tether.delete web01
        salt '*' tether.delete web01 missing_ok=True
    """
    doc = _run("delete", [connection], tether_bin=tether_bin, tether_home=tether_home, proxy=proxy, allow_fail=True)
    if doc.get("ok") is False:
        error = doc.get("error") or {}
        if missing_ok and error.get("code") == "not_found":
            return {"ok": True, "changed": False, "deleted": []}
        raise CommandExecutionError(error_message("delete", error, doc.get("rc")), info=doc)
    return doc


def delete_all(tether_bin=None, tether_home=None, proxy=None):
    """
    Deletes every local connection (``tether delete-all``).

    CLI example:

    .. code-block:: bash

        salt '*' tether.delete_all
    """
    return _run("delete-all", [], tether_bin=tether_bin, tether_home=tether_home, proxy=proxy)
