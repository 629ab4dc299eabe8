#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) tether contributors
# GNU General Public License v2.0-only (see https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: pending
short_description: List, approve or decline registrations held for approval on a tether site
version_added: "0.1.0"
description:
  - Works through the site's admin API (C(/SITE/tether-admin/v1/)) as a site user, with the rights
    of that user, by running C(tether-receiver pending --server) on the target (usually the
    approver's own machine or the controller, with C(delegate_to) or C(connection=local)).
  - An approver (role C(agent_approver)) sees and decides only the registrations held for the
    folders it is a contact of; every other one is absent.
  - Approving or declining a registration that is no longer pending (or not visible) changes
    nothing and reports C(found=false), so plays can be re-run.
  - The password goes to C(tether-receiver) in its environment, never on its command line.
author:
  - tether contributors (!UNKNOWN)
options:
  action:
    description:
      - V(list) returns the pending registrations the user may decide on; V(approve) and V(decline)
        decide on the one with O(uuid).
    type: str
    choices: [list, approve, decline]
    default: list
  server:
    description:
      - The site's receiver, C(HOST[:PORT]) (port 8000 if omitted).
    type: str
    required: true
  site:
    description:
      - The site name.
    type: str
    required: true
  user:
    description:
      - The site user (e.g. one with the role C(agent_approver)).
    type: str
    required: true
  password:
    description:
      - The user's password. Exactly one of O(password) and O(password_file) is required.
    type: str
  password_file:
    description:
      - A file on the target whose first line is the user's password.
    type: path
  fingerprint:
    description:
      - SHA-256 fingerprint (C(sha256:HEX)) of a certificate of the receiver's chain, as
        C(tether-receiver fingerprint) shows it (the site CA's stays valid when the server
        certificate is replaced). Exactly one of O(fingerprint) and O(root_ca) is required.
    type: str
  root_ca:
    description:
      - A PEM file on the target with the CA that the receiver's certificate chains to.
    type: path
  uuid:
    description:
      - The registration to decide on (required for V(approve) and V(decline)).
    type: str
  host_name:
    description:
      - With V(approve), the name of the new host (default the agent's C(cmk/hostname) label).
    type: str
  folder:
    description:
      - With V(approve), the folder of the new host (default the holding rule's folder); the user must
        be allowed to approve in it.
    type: str
  mode:
    description:
      - With V(approve), the new host's connection mode.
    type: str
    choices: [pull, push]
  reason:
    description:
      - With V(decline), the reason the waiting agent receives.
    type: str
    default: Declined by the site administrator
  receiver_bin:
    description:
      - Path or name of the C(tether-receiver) binary. Defaults to the environment variable
        C(TETHER_RECEIVER_BIN), else C(tether-receiver) in C(PATH).
    type: path
notes:
  - Supports C(check_mode), in which it lists and reports whether the decision would change anything.
requirements:
  - the C(tether-receiver) binary on the target (no site directory is needed)
seealso:
  - module: tether.agent.registration
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
'''

EXAMPLES = r'''
- name: What waits for my folders
  tether.agent.pending:
    server: monitoring.example.com
    site: prod
    user: team-web
    password: "{{ vault_team_web_password }}"
    fingerprint: "{{ tether_site_fingerprint }}"
  register: waiting
  delegate_to: localhost

- name: Approve the web servers' agents
  tether.agent.pending:
    action: approve
    uuid: "{{ item.uuid }}"
    server: monitoring.example.com
    site: prod
    user: team-web
    password_file: ~/.config/tether/password
    fingerprint: "{{ tether_site_fingerprint }}"
  loop: "{{ waiting.pending | selectattr('labels.role', 'defined') | selectattr('labels.role', 'eq', 'web') }}"
  delegate_to: localhost

- name: Decline one
  tether.agent.pending:
    action: decline
    uuid: 5f0b7c1e-6a53-4b8e-9a31-0c2d7f3e9b10
    reason: not one of ours
    server: monitoring.example.com
    site: prod
    user: team-web
    password: "{{ vault_team_web_password }}"
    fingerprint: "{{ tether_site_fingerprint }}"
  delegate_to: localhost
'''

RETURN = r'''
changed:
  description: Whether a registration was (or, in check mode, would be) approved or declined.
  returned: always
  type: bool
pending:
  description: With V(list), the registrations the user may decide on, as C(tether-receiver pending list --json)
    reports them (uuid, user, kind, labels, folder, source, created_at, ...).
  returned: success and action is list
  type: list
  elements: dict
registration:
  description: With V(approve) and V(decline), the entry that was (or would be) decided on; absent if it
    was not pending.
  returned: when it was pending
  type: dict
found:
  description: With V(approve) and V(decline), whether O(uuid) was pending and visible to the user.
  returned: success and action is not list
  type: bool
error:
  description: The C(error) object of tether-receiver's JSON document.
  returned: failed
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tether.agent.plugins.module_utils.tether_cli import (
    DEFAULT_PORT,
    TetherCLI,
    TetherError,
    resolve_binary,
    split_server,
)


def site_url(server, site):
    host, port = split_server(server)
    if ':' in host:
        host = '[%s]' % host
    return 'https://%s:%s/%s' % (host, port or DEFAULT_PORT, site)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            action=dict(type='str', choices=['list', 'approve', 'decline'], default='list'),
            server=dict(type='str', required=True),
            site=dict(type='str', required=True),
            user=dict(type='str', required=True),
            password=dict(type='str', no_log=True),
            password_file=dict(type='path'),
            fingerprint=dict(type='str'),
            root_ca=dict(type='path'),
            uuid=dict(type='str'),
            host_name=dict(type='str'),
            folder=dict(type='str'),
            mode=dict(type='str', choices=['pull', 'push']),
            reason=dict(type='str', default='Declined by the site administrator'),
            receiver_bin=dict(type='path'),
        ),
        supports_check_mode=True,
        mutually_exclusive=[('password', 'password_file'), ('fingerprint', 'root_ca')],
        required_one_of=[('password', 'password_file'), ('fingerprint', 'root_ca')],
        required_if=[('action', 'approve', ['uuid']), ('action', 'decline', ['uuid'])],
    )
    p = module.params
    binary = resolve_binary(module, 'receiver_bin', 'TETHER_RECEIVER_BIN', 'tether-receiver')
    cli = TetherCLI(module, binary=binary, default='tether-receiver', home_param=None)

    common = ['--server', site_url(p['server'], p['site']), '--user', p['user']]
    if p['fingerprint']:
        common += ['--trust-fingerprint', p['fingerprint']]
    else:
        common += ['--root-ca', p['root_ca']]
    env = {}
    if p['password_file']:
        common += ['--password-file', p['password_file']]
    else:
        # In the environment, never in argv.
        env['TETHER_PASSWORD'] = p['password']

    try:
        listed = cli.run(['pending', 'list'], common, env=env).get('registrations') or []
        if p['action'] == 'list':
            module.exit_json(changed=False, pending=listed)
        entry = None
        for r in listed:
            if r.get('uuid') == p['uuid']:
                entry = r
        if entry is None:
            module.exit_json(changed=False, found=False)
        if not module.check_mode:
            if p['action'] == 'approve':
                args = [p['uuid']]
                for opt, flag in (('host_name', '--host'), ('folder', '--folder'), ('mode', '--mode')):
                    if p[opt]:
                        args += [flag, p[opt]]
                cli.run(['pending', 'approve'], args + common, env=env)
            else:
                cli.run(['pending', 'decline'], [p['uuid'], '--reason', p['reason']] + common, env=env)
        module.exit_json(changed=True, found=True, registration=entry)
    except TetherError as exc:
        cli.fail(exc, changed=False)


if __name__ == '__main__':
    main()
