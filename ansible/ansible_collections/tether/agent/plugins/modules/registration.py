#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) tether contributors
# GNU General Public License v2.0-only (see https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: registration
short_description: Register a host's tether agent with a monitoring site, or remove the registration
version_added: "0.1.0"
description:
  - Ensures that the tether agent on the target is registered with a Checkmk-compatible site
    (C(state=present)) or that its registrations are removed (C(state=absent)).
  - Reads the current state first with C(tether status --json --no-query-remote) (and, for an existing
    registration, the site's view of it) and runs C(tether register), C(tether register-new) or
    C(tether delete) only when something has to change.
  - The password reaches C(tether) on standard input (C(--password-stdin)) and the token in the
    environment (C(TETHER_TOKEN)); neither ever appears on the command line.
  - C(changed) comes from the JSON document C(tether) prints; a failure carries C(error.code) and
    the message of that document.
author:
  - tether contributors (!UNKNOWN)
options:
  state:
    description:
      - C(present) registers the host if it is not registered yet (or no longer valid).
      - C(absent) deletes the matching registrations, locally and (on a tether site) on the
        site; a Checkmk site keeps its registration and the module warns.
    type: str
    choices: [present, absent]
    default: present
  server:
    description:
      - The site's agent receiver, C(HOST) or C(HOST:PORT).
      - Without a port, a registration on any port of that host matches.
      - Required with C(state=present).
    type: str
  site:
    description:
      - Name of the monitoring site.
      - Required with C(state=present).
    type: str
  host_name:
    description:
      - Name of the host in the site.
      - Required with C(state=present) and C(mode=existing); optional with C(mode=new), where the
        site chooses the name.
      - With C(state=absent), limits the deletion to registrations of that host name.
    type: str
  mode:
    description:
      - C(existing) registers for a host that the site already monitors (C(tether register)).
      - C(new) asks the site to create the host (C(tether register-new)), sending O(agent_labels);
        the site may accept it, decline it, or keep it pending.
    type: str
    choices: [existing, new]
    default: existing
  agent_labels:
    description:
      - Labels sent with a new-host registration (C(mode=new)), as a dictionary of keys and values.
    type: dict
  user:
    description:
      - Name of the automation user that registers (needs registration rights only).
    type: str
  password:
    description:
      - Password of O(user). Handed to C(tether) on standard input, never on the command line, and
        never logged.
    type: str
  token:
    description:
      - A registration token, handed to C(tether) in the environment variable C(TETHER_TOKEN).
    type: str
  trust_fingerprint:
    description:
      - Pins the site's certificate (or its CA's) by SHA-256 fingerprint, C(sha256:HEX).
      - One of O(trust_fingerprint), O(root_ca) or O(trust_cert) is needed for a first registration.
    type: str
  root_ca:
    description:
      - Path on the target of a PEM CA certificate that the site's certificate must chain to.
    type: path
  trust_cert:
    description:
      - Trusts whatever certificate the site presents (trust on first use). Use only in labs.
    type: bool
    default: false
  force:
    description:
      - Replaces an existing registration of this host under another host name on the same
        server and site. Without it, such a registration fails with error code C(conflict).
    type: bool
    default: false
  key_type:
    description:
      - Type of the agent's key pair.
    type: str
    choices: [ec, rsa2048, rsa4096]
  wait:
    description:
      - With C(mode=new), waits up to O(timeout) seconds for the site's decision.
      - With C(wait=false), a pending registration is reported with C(status=pending) and not as a
        failure; running the task again resumes it.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the site's decision with C(mode=new) and O(wait=true).
      - When the site has not decided by then, the task fails with error code C(pending); running
        it again resumes the registration.
    type: int
  query_remote:
    description:
      - When a matching registration exists locally, also asks the site whether it still knows it
        (C(tether status --json)). When the site answers C(not_registered) or C(rejected) (it refuses
        the certificate, e.g. revoked), the host is registered again.
    type: bool
    default: true
extends_documentation_fragment:
  - tether.agent.agent
notes:
  - Supports C(check_mode) (decides from the local state and the site's status of the registration,
    never calls C(register) or C(delete); when a change is due and a trust option is set, runs
    C(tether probe), which sends no credentials, so a wrong fingerprint fails in check mode too)
    and C(diff_mode) (the connection before and after).
requirements:
  - the C(tether) binary on the target
seealso:
  - module: tether.agent.status
  - module: tether.agent.receiver_apply
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
'''

EXAMPLES = r'''
- name: Register this host with the site, pinning the site's certificate
  tether.agent.registration:
    server: monitoring.example.com:8000
    site: prod
    host_name: "{{ inventory_hostname }}"
    user: agent_registration
    password: "{{ vault_tether_registration_password }}"
    trust_fingerprint: "sha256:3f1c0d2e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"

- name: Ask the site to create this host, with labels, waiting up to two minutes
  tether.agent.registration:
    mode: new
    server: monitoring.example.com
    site: prod
    user: agent_registration
    password: "{{ vault_tether_registration_password }}"
    trust_fingerprint: "{{ tether_site_fingerprint }}"
    agent_labels:
      os: linux
      team: web
    timeout: 120

- name: Remove every registration of this host with the site
  tether.agent.registration:
    state: absent
    server: monitoring.example.com
    site: prod
'''

RETURN = r'''
changed:
  description: Whether a registration was created, replaced or deleted (from tether's JSON).
  returned: always
  type: bool
action:
  description:
    - What was (or, in check mode, would be) done.
    - One of C(registered), C(replaced), C(unchanged), C(deleted), C(pending).
  returned: always
  type: str
  sample: registered
connection:
  description: The connection after the task (C(state=present)), as C(tether) reports it.
  returned: when state=present and the host is registered
  type: dict
  sample:
    uuid: 6f1e6f5c-3a3b-4a73-8d8f-0b6a3c9c6b11
    server: monitoring.example.com:8000
    site: prod
    host_name: web01
    connection_mode: pull-agent
    trust: fingerprint
    key_type: ec
    certificate:
      not_before: "2026-01-01T00:00:00Z"
      not_after: "2027-01-01T00:00:00Z"
      fingerprint: "sha256:..."
      valid: true
status:
  description: With C(mode=new), C(success) or C(pending).
  returned: when mode=new and state=present
  type: str
  sample: success
deleted:
  description: UUIDs of the deleted connections.
  returned: when state=absent
  type: list
  elements: str
remote:
  description: The site's view of the matching connection (C(remote) of C(tether status --json)),
    with C(status) C(registered), C(not_registered), C(rejected), C(error) or C(not_queried).
  returned: when a matching registration existed and query_remote=true
  type: dict
reason:
  description:
    - Why a change was (or would be) made, e.g. not registered, the certificate expired, or the
      site no longer knows or refuses the connection (HTTP 400/401/403/404/410, such as a revoked
      certificate).
  returned: when changed
  type: str
error:
  description: The C(error) object of tether's JSON document (C(code), C(message), maybe C(hint),
    C(http_status), C(server_fingerprints) and C(presented_certificates), which labels them
    C(server_certificate) and C(site_ca)).
  returned: failed
  type: dict
  sample:
    code: trust
    message: the server's certificate does not match the pinned fingerprint
    server_fingerprints: ["sha256:..."]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tether.agent.plugins.module_utils.tether_cli import (
    AGENT_COMMON_ARGS,
    TetherCLI,
    TetherError,
    connection_summary,
    find_connections,
)


def trust_args(params):
    args = []
    if params['trust_fingerprint']:
        args += ['--trust-fingerprint', params['trust_fingerprint']]
    if params['root_ca']:
        args += ['--root-ca', params['root_ca']]
    if params['trust_cert']:
        args += ['--trust-cert']
    return args


def secret_args(params):
    """Argv flags, stdin and environment that carry the secrets: never the secret in argv."""
    args, stdin, env = [], None, {}
    if params['password'] is not None:
        args.append('--password-stdin')
        stdin = params['password']
    if params['token'] is not None:
        env['TETHER_TOKEN'] = params['token']
    return args, stdin, env


def predicted_connection(params, existing=None):
    conn = dict(existing or {})
    conn.pop('uuid', None)
    for key in ('certificate_not_after', 'certificate_fingerprint', 'certificate_valid'):
        conn.pop(key, None)
    conn['server'] = params['server']
    conn['site'] = params['site']
    if params['host_name']:
        conn['host_name'] = params['host_name']
    if params['trust_fingerprint']:
        conn['trust'] = 'fingerprint'
    elif params['root_ca']:
        conn['trust'] = 'root_ca'
    elif params['trust_cert']:
        conn['trust'] = 'insecure'
    if params['key_type']:
        conn['key_type'] = params['key_type']
    return conn


def remote_statuses(cli):
    """uuid -> the site's view of that connection (``remote`` of ``tether status --json``)."""
    doc = cli.run('status', [])
    return dict((c.get('uuid'), c.get('remote') or {}) for c in doc.get('connections') or [])


# HTTP answers of a site that mean it will not accept this connection any more
# (e.g. a revoked certificate), as opposed to errors that say nothing about it.
REFUSED = (400, 401, 403, 404, 410)


def needs_registration(module, conn, remotes):
    """Why an existing local registration has to be renewed, or None."""
    cert = conn.get('certificate') or {}
    if cert.get('valid') is False:
        return 'the certificate of connection %s is not valid (not after %s)' % (
            conn.get('uuid'), cert.get('not_after'))
    if remotes is None:
        return None
    remote = remotes.get(conn.get('uuid')) or {}
    status = remote.get('status')
    err = remote.get('error') or {}
    if status == 'not_registered':
        return 'the site no longer knows connection %s' % conn.get('uuid')
    if status == 'rejected' or (status == 'error' and err.get('http_status') in REFUSED):
        return 'the site refuses connection %s: %s' % (conn.get('uuid'), err.get('message'))
    if status == 'error':
        module.warn('could not ask the site about connection %s: [%s] %s' % (
            conn.get('uuid'), err.get('code'), err.get('message')))
    return None


def present(module, cli, result):
    p = module.params
    status = cli.run('status', ['--no-query-remote'])
    conns = status.get('connections') or []
    if p['mode'] == 'existing':
        same = find_connections(conns, p['server'], p['site'], p['host_name'])
        others = [c for c in find_connections(conns, p['server'], p['site']) if c not in same]
    else:
        same = find_connections(conns, p['server'], p['site'], p['host_name'])
        others = []

    before = connection_summary(same[0] if same else (others[0] if others else None))
    reason = None
    if same:
        remotes = remote_statuses(cli) if p['query_remote'] else None
        reasons = [needs_registration(module, c, remotes) for c in same]
        healthy = [c for c, r in zip(same, reasons) if r is None]
        if healthy:
            result['action'] = 'unchanged'
            result['connection'] = healthy[0]
            if remotes is not None:
                result['remote'] = remotes.get(healthy[0].get('uuid'))
            if p['mode'] == 'new':
                result['status'] = 'success'
            before = connection_summary(healthy[0])
            result['diff'] = dict(before=before, after=before)
            return
        reason = reasons[0]
    elif others:
        if not p['force']:
            other = others[0]
            raise TetherError('tether register', dict(
                code='conflict',
                message='this host is already registered with %s/%s as %r (connection %s)' % (
                    other.get('server'), other.get('site'), other.get('host_name'), other.get('uuid')),
                hint='set force: true to replace that registration'), rc=7)
        reason = 'replaces the registration as %r' % others[0].get('host_name')
    else:
        pending = find_connections(status.get('pending') or [], p['server'], p['site']) if p['mode'] == 'new' else []
        if pending:
            reason = 'resumes the pending new-host registration %s' % pending[0].get('uuid')
        else:
            reason = 'not registered with %s/%s' % (p['server'], p['site'])

    result['reason'] = reason
    if module.check_mode:
        # Without credentials, at least prove the pinned trust: a wrong fingerprint fails
        # in check mode too instead of only in the real run.
        if trust_args(p):
            cli.run('probe', ['-s', p['server'], '-i', p['site']] + trust_args(p))
        result['changed'] = True
        result['action'] = 'replaced' if (others and not same) else 'registered'
        result['diff'] = dict(before=before, after=predicted_connection(p, before))
        return

    sargs, stdin, env = secret_args(p)
    args = ['-s', p['server'], '-i', p['site']]
    if p['user']:
        args += ['-U', p['user']]
    args += sargs + trust_args(p)
    if p['key_type']:
        args += ['--key-type', p['key_type']]
    if p['mode'] == 'existing':
        args += ['-H', p['host_name']]
        if p['force']:
            args.append('--force')
        doc = cli.run('register', args, stdin=stdin, env=env)
        result['action'] = doc.get('action') or ('registered' if doc.get('changed') else 'unchanged')
    else:
        for key, value in sorted((p['agent_labels'] or {}).items()):
            args += ['--agent-labels', '%s:%s' % (key, value)]
        if not p['wait']:
            args.append('--no-wait')
        elif p['timeout'] is not None:
            args += ['--timeout', str(p['timeout'])]
        doc = cli.run('register-new', args, stdin=stdin, env=env)
        result['status'] = doc.get('status')
        result['action'] = 'pending' if doc.get('status') == 'pending' else (
            'registered' if doc.get('changed') else 'unchanged')
    result['changed'] = bool(doc.get('changed'))
    conn = doc.get('connection')
    if conn:
        result['connection'] = conn
    result['diff'] = dict(before=before, after=connection_summary(conn) if conn else before)


def absent(module, cli, result):
    p = module.params
    status = cli.run('status', ['--no-query-remote'])
    matches = find_connections(status.get('connections') or [], p['server'], p['site'], p['host_name'])
    result['deleted'] = []
    before = dict(connections=[connection_summary(c) for c in matches])
    result['diff'] = dict(before=before, after=dict(connections=[]))
    if not matches:
        result['action'] = 'unchanged'
        result['diff']['after'] = before
        return
    result['reason'] = '%d matching registration(s)' % len(matches)
    if module.check_mode:
        result['changed'] = True
        result['action'] = 'deleted'
        result['deleted'] = [c.get('uuid') for c in matches]
        return
    for conn in matches:
        doc = cli.run('delete', [conn['uuid']], allow_fail=True)
        if doc.get('ok') is False:
            # Gone since the status above (another run, an operator): already absent.
            if doc['error'].get('code') == 'not_found':
                continue
            raise TetherError('tether delete', doc['error'], rc=doc.get('rc'))
        if doc.get('changed'):
            result['changed'] = True
        result['deleted'].extend(doc.get('deleted') or [])
        for w in doc.get('warnings') or []:
            module.warn(w)
    result['action'] = 'deleted' if result['changed'] else 'unchanged'


def main():
    argument_spec = dict(
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        server=dict(type='str'),
        site=dict(type='str'),
        host_name=dict(type='str'),
        mode=dict(type='str', choices=['existing', 'new'], default='existing'),
        agent_labels=dict(type='dict'),
        user=dict(type='str'),
        password=dict(type='str', no_log=True),
        token=dict(type='str', no_log=True),
        trust_fingerprint=dict(type='str'),
        root_ca=dict(type='path'),
        trust_cert=dict(type='bool', default=False),
        force=dict(type='bool', default=False),
        key_type=dict(type='str', choices=['ec', 'rsa2048', 'rsa4096']),
        wait=dict(type='bool', default=True),
        timeout=dict(type='int'),
        query_remote=dict(type='bool', default=True),
    )
    argument_spec.update(AGENT_COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[
            ('state', 'present', ('server', 'site')),
        ],
        mutually_exclusive=[('trust_fingerprint', 'root_ca', 'trust_cert')],
    )
    p = module.params
    if p['state'] == 'absent' and not (p['server'] or p['site'] or p['host_name']):
        module.fail_json(msg='state=absent needs at least one of server, site, host_name',
                         error=dict(code='usage', message='nothing to match'))
    if p['state'] == 'present' and p['mode'] == 'existing' and not p['host_name']:
        module.fail_json(msg='mode=existing needs host_name', error=dict(code='usage', message='host_name missing'))

    cli = TetherCLI(module)
    result = dict(changed=False)
    try:
        if p['state'] == 'present':
            present(module, cli, result)
        else:
            absent(module, cli, result)
    except TetherError as exc:
        result.pop('diff', None)
        cli.fail(exc, **result)
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
