# tether %post ($1: 1 = installation, 2 = upgrade). Enables the unit on installation and
# starts it only where systemd runs; upgrades are restarted in %postun.
mkdir -p /var/lib/tether /etc/tether/enroll.d
chmod 0700 /var/lib/tether
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl enable tether.service >/dev/null 2>&1 || echo "tether: could not enable tether.service" >&2
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -eq 1 ] && systemctl is-enabled --quiet tether.service; then
        # Enrolls from /etc/tether/enroll.toml; a failure must not fail the installation.
        systemctl start tether.service || echo "tether: tether.service did not start; see: journalctl -u tether.service" >&2
    fi
fi
exit 0
