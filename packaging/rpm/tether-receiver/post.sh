# tether-receiver %post ($1: 1 = installation, 2 = upgrade). Enables the unit on
# installation and starts it only where systemd runs (it serves only after
# `tether-receiver init`); upgrades are restarted in %postun.
mkdir -p /var/lib/tether-receiver
chmod 0700 /var/lib/tether-receiver
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl enable tether-receiver.service >/dev/null 2>&1 || echo "tether-receiver: could not enable tether-receiver.service" >&2
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -eq 1 ] && systemctl is-enabled --quiet tether-receiver.service; then
        systemctl start tether-receiver.service || echo "tether-receiver: tether-receiver.service did not start; see: journalctl -u tether-receiver.service" >&2
    fi
fi
exit 0
