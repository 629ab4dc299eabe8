# Register this minion's tether agent with the monitoring site.
#
# The secrets stay in pillar (pillar/tether.sls, best encrypted with the gpg
# renderer): the state reads them on the minion through password_pillar, so
# they never appear in the rendered SLS, in the job's return or on tether's
# command line (tether gets the password on stdin).
#
#   salt-call state.apply tether test=True     # what would change
#   salt-call state.apply tether               # register (idempotent)
{% set t = salt['pillar.get']('tether', {}) %}

tether-registered:
  tether.registered:
    - name: {{ t.get('host_name', grains['id']) }}
    - server: {{ t['server'] }}
    - site: {{ t['site'] }}
    - user: {{ t.get('user', 'agent_registration') }}
    - password_pillar: tether:registration_password
    - trust_fingerprint: {{ t['fingerprint'] }}
{% if t.get('tether_bin') %}
    - tether_bin: {{ t['tether_bin'] }}
{% endif %}
{% if t.get('tether_home') %}
    - tether_home: {{ t['tether_home'] }}
{% endif %}
