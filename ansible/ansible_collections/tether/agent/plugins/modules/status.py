#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) tether contributors
# GNU General Public License v2.0-only (see https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: status
short_description: Gather the tether agent's registrations as facts
version_added: "0.1.0"
description:
  - Runs C(tether status --json) on the target and returns its document as the fact
    C(tether_status), plus C(tether_connections), the list of connections.
  - Never changes anything.
author:
  - tether contributors (!UNKNOWN)
options:
  query_remote:
    description:
      - Also asks each site whether it still knows the registration (the C(remote) object of each
        connection). Without it, C(remote.status) is C(not_queried).
    type: bool
    default: true
extends_documentation_fragment:
  - tether.agent.agent
requirements:
  - the C(tether) binary on the target
seealso:
  - module: tether.agent.registration
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
'''

EXAMPLES = r'''
- name: Gather the agent's registrations
  tether.agent.status:
    query_remote: false

- name: Show the sites this host is registered with
  ansible.builtin.debug:
    msg: "{{ tether_connections | map(attribute='site') | list }}"

- name: Fail when the certificate of any registration is no longer valid
  ansible.builtin.assert:
    that: tether_connections | rejectattr('certificate.valid') | list | length == 0
'''

RETURN = r'''
ansible_facts:
  description: Facts set by this module.
  returned: always
  type: complex
  contains:
    tether_status:
      description: The whole document of C(tether status --json) (C(connections), C(agent_source), ...).
      returned: always
      type: dict
    tether_connections:
      description: The connections, each with C(uuid), C(server), C(site), C(host_name),
        C(connection_mode), C(certificate), C(trust), C(key_type) and C(remote).
      returned: always
      type: list
      elements: dict
      sample:
        - uuid: 6f1e6f5c-3a3b-4a73-8d8f-0b6a3c9c6b11
          server: monitoring.example.com:8000
          site: prod
          host_name: web01
          connection_mode: pull-agent
          remote:
            status: registered
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tether.agent.plugins.module_utils.tether_cli import (
    AGENT_COMMON_ARGS,
    TetherCLI,
    TetherError,
)


def main():
    argument_spec = dict(
        query_remote=dict(type='bool', default=True),
    )
    argument_spec.update(AGENT_COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    cli = TetherCLI(module)
    args = [] if module.params['query_remote'] else ['--no-query-remote']
    try:
        doc = cli.run('status', args)
    except TetherError as exc:
        cli.fail(exc, changed=False)
    module.exit_json(
        changed=False,
        ansible_facts=dict(
            tether_status=doc,
            tether_connections=doc.get('connections') or [],
        ),
    )


if __name__ == '__main__':
    main()
