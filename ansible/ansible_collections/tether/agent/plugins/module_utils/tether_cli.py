# -*- coding: utf-8 -*-
# Copyright: (c) tether contributors
# GNU General Public License v2.0-only (see https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt)
"""Shared helpers for the tether.agent modules.

Runs the ``tether`` / ``tether-receiver`` binaries with a list argv (never a
shell), hands secrets over on stdin or in the environment (never in argv),
parses the single JSON document every ``--json`` command prints on stdout and
maps ``{"ok": false, "error": {...}}`` to a module failure that carries
``error.code`` and the message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

# Exit codes of the tether CLIs and the error.code each one stands for.
EXIT_CODES = {
    0: 'ok',
    1: 'internal',
    2: 'usage',
    3: 'auth_failed',
    4: 'permission_denied',
    5: 'host_not_found',
    6: 'wrong_site',
    7: 'conflict',
    8: 'trust',
    9: 'network',
    10: 'pending',
    11: 'declined',
    12: 'local_state',
    13: 'protocol',
    14: 'not_found',
    15: 'unsupported',
    16: 'not_registered',
    17: 'unknown_site',
}

DEFAULT_PORT = 8000

# Options shared by every module that runs the agent binary.
AGENT_COMMON_ARGS = dict(
    tether_bin=dict(type='path'),
    tether_home=dict(type='path'),
    # May carry USER:PASSWORD@.
    proxy=dict(type='str', no_log=True),
)


class TetherError(Exception):
    """A failed tether command: carries the JSON ``error`` object."""

    def __init__(self, command, error, rc=None, stderr=None, stdout=None):
        self.command = command
        self.error = error or {}
        self.rc = rc
        self.stderr = stderr
        self.stdout = stdout
        super(TetherError, self).__init__(self.message())

    @property
    def code(self):
        return self.error.get('code') or EXIT_CODES.get(self.rc, 'internal')

    def message(self):
        msg = '%s failed [%s]: %s' % (
            self.command, self.code, self.error.get('message') or 'no message')
        if self.error.get('http_status'):
            msg += ' (HTTP %s)' % self.error['http_status']
        labelled = self.error.get('presented_certificates') or []
        fps = self.error.get('server_fingerprints') or []
        if labelled:
            msg += '; the server presented: %s' % ', '.join(
                '%s %s' % (c.get('role', '').replace('_', ' '), c.get('fingerprint')) for c in labelled)
        elif fps:
            msg += '; the server presented: %s' % ', '.join(fps)
        if self.error.get('hint'):
            msg += '; hint: %s' % self.error['hint']
        return msg


def resolve_binary(module, param, env_var, default):
    """The binary to run: the module option, else ``$env_var``, else ``default`` in PATH."""
    path = module.params.get(param) or os.environ.get(env_var) or default
    if os.sep in path:
        return path
    found = module.get_bin_path(path, required=False)
    if not found:
        module.fail_json(msg='%s binary %r not found in PATH; set the %s option' % (default, path, param),
                         error=dict(code='not_found', message='binary not found: %s' % path))
    return found


class TetherCLI(object):
    """Runs one of the tether binaries for an AnsibleModule."""

    def __init__(self, module, binary=None, param='tether_bin', env_var='TETHER_BIN', default='tether',
                 home_param='tether_home'):
        self.module = module
        self.prog = default
        self.binary = binary or resolve_binary(module, param, env_var, default)
        self.env = {}
        home = module.params.get(home_param) if home_param else None
        if home:
            self.env['TETHER_HOME'] = home
        # In the environment, not in argv: a proxy URL may carry credentials.
        proxy = module.params.get('proxy')
        if proxy:
            self.env['TETHER_PROXY'] = proxy

    def run(self, subcommand, args=None, stdin=None, env=None, allow_fail=False):
        """Runs ``BIN SUBCOMMAND --json ARGS``; returns the parsed success document.

        ``subcommand`` is a list (e.g. ``['user', 'add']``). ``stdin`` is written to the
        process's standard input (secrets go there, never into argv). On a
        failure document raises TetherError, unless ``allow_fail`` is set, in
        which case the failure document itself is returned.
        """
        if not isinstance(subcommand, list):
            subcommand = [subcommand]
        argv = [self.binary] + subcommand + ['--json'] + list(args or [])
        environ = dict(self.env)
        if env:
            environ.update(env)
        rc, out, err = self.module.run_command(
            argv,
            data=stdin,
            binary_data=stdin is not None,
            environ_update=environ,
            expand_user_and_vars=False,
        )
        doc = parse_document(out)
        name = ' '.join([self.prog] + subcommand)
        if doc is None:
            error = dict(code=EXIT_CODES.get(rc, 'internal'),
                         message='no JSON document on stdout (exit code %s): %s' % (
                             rc, (err or out or '').strip()[-2000:]))
            raise TetherError(name, error, rc=rc, stderr=err, stdout=out)
        if doc.get('ok') is False or (rc != 0 and doc.get('ok') is not True):
            if allow_fail:
                doc.setdefault('error', {})
                doc['rc'] = rc
                return doc
            error = doc.get('error') or dict(code=EXIT_CODES.get(rc, 'internal'),
                                             message=(err or '').strip()[-2000:])
            raise TetherError(name, error, rc=rc, stderr=err, stdout=out)
        return doc

    def fail(self, exc, **kwargs):
        """Fails the module with the error of a TetherError."""
        result = dict(kwargs)
        result['msg'] = exc.message()
        result['error'] = exc.error
        result['rc'] = exc.rc
        if exc.stderr:
            result['stderr'] = exc.stderr
        self.module.fail_json(**result)


def parse_document(out):
    """The single JSON document on stdout, or None."""
    out = (out or '').strip()
    if not out:
        return None
    try:
        doc = json.loads(out)
    except ValueError:
        # Tolerate stray lines before the document: take the last line that opens one.
        lines = out.splitlines()
        doc = None
        for i in range(len(lines)):
            if lines[i].startswith('{'):
                try:
                    doc = json.loads('\n'.join(lines[i:]))
                    break
                except ValueError:
                    continue
    if not isinstance(doc, dict):
        return None
    return doc


def split_server(server):
    """``host[:port]`` -> (host, port or None). Understands ``[v6]:port``."""
    server = (server or '').strip()
    if server.startswith('['):
        host, dummy, rest = server[1:].partition(']')
        port = rest[1:] if rest.startswith(':') else None
    elif server.count(':') == 1:
        host, port = server.split(':')
    else:
        host, port = server, None
    try:
        port = int(port) if port else None
    except ValueError:
        port = None
    return host.lower(), port


def same_server(wanted, actual):
    """True if the connection's ``host:port`` is the server the user asked for.

    A server given without a port matches any port of that host.
    """
    whost, wport = split_server(wanted)
    ahost, aport = split_server(actual)
    if whost != ahost:
        return False
    return wport is None or aport is None or wport == aport


def find_connections(connections, server=None, site=None, host_name=None):
    """The connections matching the given server/site/host name (None matches anything)."""
    found = []
    for conn in connections or []:
        if server and not same_server(server, conn.get('server', '')):
            continue
        if site and conn.get('site') != site:
            continue
        if host_name and conn.get('host_name') != host_name:
            continue
        found.append(conn)
    return found


def connection_summary(conn):
    """The part of a connection shown in diffs."""
    if not conn:
        return {}
    keys = ('uuid', 'server', 'site', 'host_name', 'connection_mode', 'trust', 'root_cert_fingerprint',
            'key_type')
    summary = dict((k, conn.get(k)) for k in keys if conn.get(k) is not None)
    cert = conn.get('certificate') or {}
    for k in ('not_after', 'fingerprint', 'valid'):
        if k in cert:
            summary['certificate_' + k] = cert[k]
    return summary
