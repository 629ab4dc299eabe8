# The tether agent from nothing: package, tether.toml, firewall, service, port, registration.
# Everything comes from the pillar key `tether` (salt/formula/pillar.example documents it);
# the registration reads the password from pillar on the minion (password_pillar), so it is
# never rendered into this SLS or the job's return.
#
#   salt-call state.apply tether test=True     # what would change (changes nothing)
#   salt-call state.apply tether               # converge (idempotent)
{% set t = salt['pillar.get']('tether', {}) %}
{% set install = t.get('install', 'repo') %}
{% set port = t.get('port', 6556) | int %}
{% set config_path = t.get('config_path', '/etc/tether/tether.toml') %}
{% set service = t.get('service', True) %}
{% set firewall = t.get('firewall', 'none') %}

{% if install == 'repo' %}
tether-package:
  pkg.installed:
    - name: {{ t.get('package_name', 'tether') }}
{% elif install == 'file' %}
# package_file: a .deb or .rpm as salt:// URL or an absolute path on the minion.
tether-package:
  pkg.installed:
    - sources:
      - {{ t.get('package_name', 'tether') }}: {{ t['package_file'] }}
{% endif %}

tether-config:
  file.managed:
    - name: {{ config_path }}
    - source: salt://tether/files/tether.toml.jinja
    - template: jinja
    - makedirs: True
    # 0600 when the proxy carries credentials.
    - mode: "{{ '0600' if '@' in t.get('proxy', 'direct') else '0644' }}"
    - context:
        proxy: {{ t.get('proxy', 'direct') | json }}
        config: {{ t.get('config', {}) | json }}
        port: {{ port }}
{% if install != 'none' %}
    - require:
      - pkg: tether-package
{% endif %}

{% if firewall == 'firewalld' %}
tether-firewall:
  cmd.run:
    - name: firewall-cmd --permanent --add-port={{ port }}/tcp && firewall-cmd --reload
    - unless: firewall-cmd --permanent --query-port={{ port }}/tcp
{% elif firewall == 'ufw' %}
tether-firewall:
  cmd.run:
    - name: ufw allow {{ port }}/tcp comment 'tether (Checkmk pull)'
    - unless: ufw show added | grep -qx 'ufw allow {{ port }}/tcp comment .*'
{% endif %}

{% if service %}
tether-service:
  service.running:
    - name: {{ t.get('service_name', 'tether') }}
    - enable: True
    - watch:
      - file: tether-config
{% if install != 'none' %}
      - pkg: tether-package
{% endif %}
{% endif %}

{% if t.get('wait_for_port', True) %}
tether-port:
  tether.listening:
    - port: {{ port }}
    - host: {{ t.get('wait_host', '127.0.0.1') }}
    - timeout: {{ t.get('wait_timeout', 60) }}
    - require:
      - file: tether-config
{% if service %}
      - service: tether-service
{% endif %}
{% endif %}

{% if t.get('register', True) %}
tether-registered:
  tether.registered:
    - name: {{ t.get('host_name', grains['id']) }}
    - server: {{ t['server'] }}
    - site: {{ t['site'] }}
{% if t.get('mode', 'existing') == 'new' %}
    - mode: new
    - agent_labels: {{ t.get('labels', {}) | json }}
{% endif %}
{% if t.get('token_pillar') %}
    - token_pillar: {{ t['token_pillar'] }}
{% else %}
    - user: {{ t.get('user', 'agent_registration') }}
    - password_pillar: tether:registration_password
{% endif %}
    - trust_fingerprint: {{ t['fingerprint'] }}
    - tether_bin: {{ t.get('tether_bin', '/usr/bin/tether') }}
    - tether_home: {{ t.get('tether_home', '/var/lib/tether') }}
    - require:
      - file: tether-config
{% if install != 'none' %}
      - pkg: tether-package
{% endif %}
{% endif %}
