# tether-receiver %postun ($1: 0 = erase, 1 = upgrade). rpm has no purge: the site in
# /var/lib/tether-receiver (CA keys, database) stays after an erase; delete it by hand.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart tether-receiver.service || :
    fi
fi
exit 0
