#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) tether contributors
# GNU General Public License v2.0-only (see https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: receiver_apply
short_description: Converge a tether-receiver site's users, roles, groups, folders, hosts and rules
version_added: "0.1.0"
description:
  - Runs C(tether-receiver apply --json) on the site's machine with a declarative description of
    the site, so that the monitoring team manages the site from Ansible while the deployment teams hold
    only registration rights.
  - The description is either a file on the target (O(src)) or given inline (O(config)), in which
    case the module writes it to a private temporary file.
  - In check mode runs C(apply --dry-run) and reports the changes it would make.
  - Passwords of users are never part of the description; each user names a C(password_file) on
    the target or a C(password_env) variable, and O(secrets) puts such variables into the
    environment of C(tether-receiver) (never on its command line).
author:
  - tether contributors (!UNKNOWN)
options:
  dir:
    description:
      - The receiver's state directory (C(--dir)).
    type: path
    required: true
  src:
    description:
      - Path on the target of the apply file (YAML or JSON).
      - Exactly one of O(src) and O(config) is required.
    type: path
  config:
    description:
      - The apply document itself, with the keys C(users), C(roles), C(groups), C(folders),
        C(hosts) and C(rules) as C(tether-receiver apply) documents them.
    type: dict
  secrets:
    description:
      - Environment variables for C(tether-receiver), e.g. the ones that users' C(password_env)
        keys name. Never logged, never on the command line.
    type: dict
  receiver_bin:
    description:
      - Path or name of the C(tether-receiver) binary. Defaults to the environment variable
        C(TETHER_RECEIVER_BIN), else C(tether-receiver) in C(PATH).
    type: path
notes:
  - Supports C(check_mode) (C(--dry-run)) and C(diff_mode) (the list of changes).
requirements:
  - the C(tether-receiver) binary on the target
seealso:
  - module: tether.agent.registration
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
'''

EXAMPLES = r'''
- name: Manage the site's registration user and hosts
  tether.agent.receiver_apply:
    dir: /var/lib/tether-receiver
    config:
      users:
        - name: agent_registration
          role: agent_registration
          password_env: REGISTRATION_PASSWORD
      folders:
        - path: /web
      hosts:
        - name: web01
          folder: /web
        - name: web02
          folder: /web
    secrets:
      REGISTRATION_PASSWORD: "{{ vault_tether_registration_password }}"

- name: Apply a description kept on the site's machine, showing what would change
  tether.agent.receiver_apply:
    dir: /var/lib/tether-receiver
    src: /etc/tether-receiver/site.yml
  check_mode: true
  diff: true
'''

RETURN = r'''
changed:
  description: Whether the site was (or, in check mode, would be) changed, from tether-receiver's JSON.
  returned: always
  type: bool
changes:
  description: The changes C(tether-receiver apply) made (or would make), as it reports them.
  returned: always
  type: list
  elements: dict
  sample:
    - kind: host
      name: web01
      action: create
result:
  description: The whole JSON document of C(tether-receiver apply).
  returned: success
  type: dict
error:
  description: The C(error) object of tether-receiver's JSON document.
  returned: failed
  type: dict
'''

import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tether.agent.plugins.module_utils.tether_cli import (
    TetherCLI,
    TetherError,
    resolve_binary,
)


def describe(change):
    if not isinstance(change, dict):
        return str(change)
    parts = []
    for key in ('action', 'op', 'kind', 'type', 'name', 'path'):
        if change.get(key) is not None:
            parts.append(str(change[key]))
    return ' '.join(parts) if parts else json.dumps(change, sort_keys=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type='path', required=True),
            src=dict(type='path'),
            config=dict(type='dict'),
            secrets=dict(type='dict', no_log=True),
            receiver_bin=dict(type='path'),
        ),
        supports_check_mode=True,
        mutually_exclusive=[('src', 'config')],
        required_one_of=[('src', 'config')],
    )
    p = module.params
    binary = resolve_binary(module, 'receiver_bin', 'TETHER_RECEIVER_BIN', 'tether-receiver')
    cli = TetherCLI(module, binary=binary, default='tether-receiver', home_param=None)

    tmp = None
    path = p['src']
    if p['config'] is not None:
        fd, tmp = tempfile.mkstemp(prefix='tether-apply-', suffix='.json')
        with os.fdopen(fd, 'w') as f:
            json.dump(p['config'], f)
        path = tmp
    elif not os.path.exists(path):
        module.fail_json(msg='apply file %s does not exist' % path,
                         error=dict(code='not_found', message='no such file: %s' % path))

    env = dict((str(k), str(v)) for k, v in (p['secrets'] or {}).items())
    args = ['--dir', p['dir'], path]
    if module.check_mode:
        args.append('--dry-run')
    try:
        doc = cli.run('apply', args, env=env)
    except TetherError as exc:
        cli.fail(exc, changed=False)
    finally:
        if tmp:
            os.unlink(tmp)

    changes = doc.get('changes') or []
    result = dict(changed=bool(doc.get('changed')), changes=changes, result=doc)
    if module._diff:
        result['diff'] = dict(before='', after=''.join(describe(c) + '\n' for c in changes),
                              after_header='tether-receiver apply')
    module.exit_json(**result)


if __name__ == '__main__':
    main()
