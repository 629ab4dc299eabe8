# Remove every registration of this minion with the site.
{% set t = salt['pillar.get']('tether', {}) %}

tether-unregistered:
  tether.absent:
    - server: {{ t['server'] }}
    - site: {{ t['site'] }}
{% if t.get('tether_bin') %}
    - tether_bin: {{ t['tether_bin'] }}
{% endif %}
{% if t.get('tether_home') %}
    - tether_home: {{ t['tether_home'] }}
{% endif %}
