#!/bin/sh
# TEST FIXTURE, not installed: the postinst of the packages before the writers and
# operators had groups of their own (one group, plutus-sync, for all), as it was.
# tests/it/packaging.rs builds a package with it to test the upgrade from that layout.
# plutus-sync postinst: the account, the folders with their owners and modes, and the
# config's group. Runs on every configure (install and upgrade) and is idempotent.
# Why each choice: packaging/deb/README.md (/usr/share/doc/plutus-sync/README.Debian).
set -e

# Give a shipped path an owner and mode that dpkg re-applies on every upgrade and
# that an administrator may change with dpkg-statoverride; an existing override
# (the package's own from an earlier install, or the administrator's) is kept.
override() {
    if ! dpkg-statoverride --list "$4" >/dev/null; then
        dpkg-statoverride --update --add "$1" "$2" "$3" "$4"
    fi
}

# Create a folder the package does not ship. One that already exists is left as
# it is: the administrator may have changed its mode or added an ACL.
folder() {
    if [ ! -d "$4" ]; then
        install -d -o "$1" -g "$2" -m "$3" "$4"
    fi
}

if [ "$1" = "configure" ]; then
    # A system account with a group of its own and no login shell. adduser --system
    # does nothing (and succeeds) when the account already exists.
    adduser --system --group --quiet --home /var/lib/plutus-sync --no-create-home \
        plutus-sync

    # The config is read by the service (group) and written by root only; it will
    # hold no secret, but the folder is also where the private key goes.
    override root plutus-sync 0750 /etc/plutus-sync
    override root plutus-sync 0640 /etc/plutus-sync/config.toml

    # The web shop's account joins the plutus-sync group and writes into the
    # outbox (group rwx); setgid keeps new files in the group, so the service can
    # read them. The archive and the quarantine are written by the service only
    # and readable by the group.
    folder root plutus-sync 0750 /var/spool/plutus-sync
    folder plutus-sync plutus-sync 2770 /var/spool/plutus-sync/outbox
    folder plutus-sync plutus-sync 2750 /var/spool/plutus-sync/archive
    folder plutus-sync plutus-sync 2750 /var/spool/plutus-sync/quarantine
    # The journal and the control socket; the optional log file. systemd also
    # creates both (StateDirectory=, LogsDirectory=) and keeps them owned by the
    # service; made here too so that `plutus-sync check` and cron use work before
    # the first start.
    folder plutus-sync plutus-sync 0750 /var/lib/plutus-sync
    folder plutus-sync plutus-sync 0750 /var/log/plutus-sync

    if [ -z "$2" ]; then
        echo "plutus-sync: edit /etc/plutus-sync/config.toml, create the key and known_hosts" \
            "(see /usr/share/doc/plutus-sync/README.Debian), run 'sudo -u plutus-sync plutus-sync check'," \
            "then 'systemctl restart plutus-sync'."
    fi
fi

#DEBHELPER#

exit 0
