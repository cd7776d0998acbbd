#!/usr/bin/env bash
# CI / README test command for a fresh Debian or Ubuntu machine:
#   bash tests/ci.sh
# Installs what the tests need, then runs fmt, clippy and the test suite.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

# The integration tests run a real sshd and the OpenSSH client against it;
# building ssh2 (libssh2-sys/openssl-sys) needs OpenSSL headers via pkg-config.
packages=(openssh-server openssh-client libssl-dev pkg-config
  # tests/it/packaging.rs: systemd-analyze (systemd); the .deb's Depends, found
  # by cargo-deb with dpkg-shlibdeps (dpkg-dev); a throwaway root to install it
  # in (debootstrap); lintian.
  systemd dpkg-dev debootstrap lintian
  # tests/it/torture.rs: the network-namespace lab (packaging/lab/lab.sh) needs
  # ip and nft.
  iproute2 nftables
  # testkit/sftp_wrapper.py (a misbehaving SFTP server for tests/it/servers.rs)
  # runs under sshd with the system's python3; chattr (e2fsprogs) makes an immutable
  # leftover temp in tests/it/delivery.rs.
  python3 e2fsprogs
  # xtask/: its test renders the generated man pages with `man -l`;
  # tests/it/packaging.rs runs the alert rules' unit tests with promtool.
  man-db prometheus)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
    missing+=("$pkg")
  fi
done

# Skip apt entirely when nothing is missing: no root, no network needed.
if ((${#missing[@]})); then
  step "Installing ${missing[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update
  # Via env: sudo would drop DEBIAN_FRONTEND from the environment.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
else
  step "System packages present: ${packages[*]}"
fi

# rustup toolchains installed with the minimal profile lack these.
if command -v rustup >/dev/null && ! { cargo fmt --version && cargo clippy --version; } >/dev/null 2>&1; then
  step "Installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi

# tests/it/packaging.rs installs the .deb that cargo-deb builds below.
cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $cargo_deb_version"; then
  step "Installing cargo-deb $cargo_deb_version"
  cargo install cargo-deb --locked --version "$cargo_deb_version"
fi

# Only pin to Cargo.lock once it is committed; an untracked lock file may be
# stale relative to Cargo.toml.
locked=()
if git ls-files --error-unmatch Cargo.lock >/dev/null 2>&1; then
  locked=(--locked)
fi

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets ${locked[*]} -- -D warnings"
cargo clippy --workspace --all-targets "${locked[@]}" -- -D warnings

# Broken intra-doc links and malformed doc comments fail like any other warning.
step "cargo doc --no-deps --workspace ${locked[*]} (RUSTDOCFLAGS=-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace "${locked[@]}"

# Built before the tests, not by them: a release build inside `cargo test` would
# wait on its build lock, or take the cores from the timing-sensitive tests.
# The man pages and completions the package ships (xtask/): generated before
# `cargo deb`, which takes them from target/assets/.
step "cargo xtask assets"
cargo xtask assets

step "cargo deb ${locked[*]} (the package tests/it/packaging.rs installs)"
PLUTUS_DEB=$(cargo deb "${locked[@]}" | grep '\.deb$' | tail -n 1)
export PLUTUS_DEB
echo "PLUTUS_DEB=$PLUTUS_DEB"

# --include-ignored: the tests that need root (mounts, namespaces, mknod, chattr,
# another user) or the .deb are `#[ignore]`d, so a plain local `cargo test` lists
# them as ignored instead of passing them; CI runs as root and runs them all.
step "cargo test --workspace --all-targets ${locked[*]} -- --include-ignored"
cargo test --workspace --all-targets "${locked[@]}" -- --include-ignored

step "All checks passed"
