//! Packaging checks: the systemd unit's hardening and the .deb (see packaging/).
