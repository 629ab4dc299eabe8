# Pillar for salt/examples/tether.sls. Keep registration_password encrypted
# (e.g. #!yaml|gpg) and readable only by the minions that register.
tether:
  server: monitoring.example.com:8000
  site: prod
  user: agent_registration
  registration_password: CHANGE-ME
  # The site's certificate fingerprint, as `tether-receiver init` prints it.
  fingerprint: "sha256:3f1c0d2e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"
  # Optional: host_name (default: the minion id), tether_bin, tether_home, and proxy
  # (direct, auto, or http://HOST:PORT) for tether's calls to the site.
