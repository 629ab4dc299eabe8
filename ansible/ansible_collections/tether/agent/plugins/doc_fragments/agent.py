# -*- coding: utf-8 -*-
# Options every module that runs the agent-side `tether` binary shares.
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r'''
options:
  tether_bin:
    description:
      - Path or name of the C(tether) binary. Defaults to the environment variable C(TETHER_BIN),
        else C(tether) in C(PATH).
    type: path
  tether_home:
    description:
      - State directory of the agent (C(TETHER_HOME)); C(tether)'s default is C(/var/lib/tether).
    type: path
  proxy:
    description:
      - How C(tether) reaches the site's receiver. C(direct), C(auto) (the target's C(HTTPS_PROXY),
        except hosts in C(NO_PROXY)), or an C(http://HOST:PORT) proxy, which may carry
        C(USER:PASSWORD@).
      - Handed over in the environment (C(TETHER_PROXY)), never on the command line.
      - Default is C(proxy) in the target's C(tether.toml), else C(direct).
    type: str
'''
