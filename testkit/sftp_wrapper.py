#!/usr/bin/env python3
"""A misbehaving SFTP server for integration tests: OpenSSH's own
`sftp-server`, with a filter in front of it.

sshd runs this as `Subsystem sftp`:

    sftp_wrapper.py [--log FILE] MODES SERVER [SERVER-ARGS...]
    sftp_wrapper.py --check MODES SERVER   (validate, then exit 0)

It spawns SERVER (e.g. /usr/lib/openssh/sftp-server), pumps the client's
requests from stdin to it and its replies back to stdout, framing both
directions as SFTP v3 packets (draft-ietf-secsh-filexfer-02): uint32 length,
then the body: byte type, uint32 request id (except INIT and VERSION), payload.

MODES is a comma-separated list of:

  passthrough        no change (proves the wrapper itself is transparent)
  rename-overwrites  SSH_FXP_RENAME is forwarded as the extended request
                     posix-rename@openssh.com with the same id, so a rename
                     onto an existing name replaces it (as a paramiko-based
                     server does)
  fsync-fails        an fsync@openssh.com request is not forwarded: the
                     wrapper answers it with SSH_FXP_STATUS SSH_FX_FAILURE

Each rewritten request is logged as one line to FILE (appended) or, without
--log, to stderr. Note that sshd hands a subsystem's stderr to the client as
channel extended data, not to its own log: the test fixture passes --log.

Standard library only; binary-safe and unbuffered (raw fds, whole packets).
Exits when either side closes: EOF on stdin closes the server's stdin and
lets it drain its replies; EOF from the server ends the wrapper.
"""

import os
import struct
import subprocess
import sys
import threading

SSH_FXP_INIT = 1
SSH_FXP_VERSION = 2
SSH_FXP_RENAME = 18
SSH_FXP_STATUS = 101
SSH_FXP_EXTENDED = 200
SSH_FX_FAILURE = 4

POSIX_RENAME = b"posix-rename@openssh.com"
FSYNC = b"fsync@openssh.com"
FSYNC_FAILURE_MESSAGE = b"fsync failed (test wrapper)"

MODES = ("passthrough", "rename-overwrites", "fsync-fails")

# Bodies up to this size are read whole (sftp-server itself refuses messages
# over 256 KiB); a larger length is streamed through unparsed, so a garbage
# length cannot make the wrapper allocate gigabytes.
MAX_PARSED_BODY = 1 << 20
CHUNK = 64 * 1024

STDIN = 0
STDOUT = 1


class Log:
    def __init__(self, path):
        if path is None:
            self.fd = 2
        else:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def line(self, text):
        data = ("sftp_wrapper[%d]: %s\n" % (os.getpid(), text)).encode(
            "utf-8", "backslashreplace"
        )
        try:
            # One write per line: O_APPEND keeps lines whole even when sshd
            # and other wrappers write to the same file.
            os.write(self.fd, data)
        except OSError:
            pass


def read_exact(fd, n):
    """Up to n bytes from fd; fewer only at EOF."""
    parts = []
    while n > 0:
        chunk = os.read(fd, min(n, CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def sftp_string(data):
    return struct.pack(">I", len(data)) + data


def packet(body):
    return struct.pack(">I", len(body)) + body


def parse_string(buf, pos):
    """(bytes, next position) of the SFTP string at pos; ValueError if short."""
    if pos + 4 > len(buf):
        raise ValueError("truncated string length")
    (n,) = struct.unpack_from(">I", buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise ValueError("truncated string")
    return buf[pos + 4 : end], end


def show(path):
    return repr(path.decode("utf-8", "backslashreplace"))


class Wrapper:
    def __init__(self, modes, server_argv, log):
        self.rename_overwrites = "rename-overwrites" in modes
        self.fsync_fails = "fsync-fails" in modes
        self.log = log
        self.stdout_lock = threading.Lock()
        self.server = subprocess.Popen(
            server_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        self.to_server = self.server.stdin.fileno()
        self.from_server = self.server.stdout.fileno()

    def reply(self, data):
        """Writes whole packets to the client, never interleaved."""
        try:
            with self.stdout_lock:
                write_all(STDOUT, data)
        except OSError:
            # The client side is gone: nothing left to do.
            self.server.kill()
            os._exit(1)

    def rewrite(self, body):
        """What to forward for one request body, or None if answered here."""
        if len(body) < 5 or body[0] == SSH_FXP_INIT:
            return body
        kind = body[0]
        (req_id,) = struct.unpack_from(">I", body, 1)
        try:
            if kind == SSH_FXP_RENAME and self.rename_overwrites:
                old, pos = parse_string(body, 5)
                new, pos = parse_string(body, pos)
                extra = len(body) - pos
                self.log.line(
                    "rename-overwrites: id=%d SSH_FXP_RENAME %s -> %s forwarded as %s%s"
                    % (
                        req_id,
                        show(old),
                        show(new),
                        POSIX_RENAME.decode(),
                        " (%d trailing bytes dropped)" % extra if extra else "",
                    )
                )
                return (
                    struct.pack(">BI", SSH_FXP_EXTENDED, req_id)
                    + sftp_string(POSIX_RENAME)
                    + sftp_string(old)
                    + sftp_string(new)
                )
            if kind == SSH_FXP_EXTENDED and self.fsync_fails:
                name, _ = parse_string(body, 5)
                if name == FSYNC:
                    self.log.line(
                        "fsync-fails: id=%d %s answered with SSH_FX_FAILURE, not forwarded"
                        % (req_id, FSYNC.decode())
                    )
                    self.reply(
                        packet(
                            struct.pack(">BII", SSH_FXP_STATUS, req_id, SSH_FX_FAILURE)
                            + sftp_string(FSYNC_FAILURE_MESSAGE)
                            + sftp_string(b"")
                        )
                    )
                    return None
        except ValueError as e:
            # Malformed: let the real server judge it.
            self.log.line("type %d id=%d malformed (%s), passed through" % (kind, req_id, e))
        return body

    def pump_requests(self):
        """Client (stdin) -> server, one packet at a time."""
        try:
            while True:
                header = read_exact(STDIN, 4)
                if len(header) < 4:
                    write_all(self.to_server, header)
                    break
                (length,) = struct.unpack(">I", header)
                if length > MAX_PARSED_BODY:
                    self.log.line("request of %d bytes streamed through unparsed" % length)
                    write_all(self.to_server, header)
                    if not self.stream(STDIN, self.to_server, length):
                        break
                    continue
                body = read_exact(STDIN, length)
                if len(body) < length:
                    write_all(self.to_server, header + body)
                    break
                forward = self.rewrite(body)
                if forward is not None:
                    write_all(self.to_server, packet(forward))
        except OSError:
            # The server is gone; pump_replies sees its EOF and exits.
            pass
        finally:
            try:
                self.server.stdin.close()
            except OSError:
                pass

    def pump_replies(self):
        """Server -> client (stdout), whole packets, unchanged."""
        while True:
            header = read_exact(self.from_server, 4)
            if len(header) < 4:
                if header:
                    self.reply(header)
                return
            (length,) = struct.unpack(">I", header)
            if length > MAX_PARSED_BODY:
                with self.stdout_lock:
                    try:
                        write_all(STDOUT, header)
                        done = self.stream(self.from_server, STDOUT, length)
                    except OSError:
                        self.server.kill()
                        os._exit(1)
                if not done:
                    return
                continue
            body = read_exact(self.from_server, length)
            self.reply(header + body)
            if len(body) < length:
                return

    @staticmethod
    def stream(src, dst, n):
        """Copies n bytes; False if src hit EOF first."""
        while n > 0:
            chunk = os.read(src, min(n, CHUNK))
            if not chunk:
                return False
            write_all(dst, chunk)
            n -= len(chunk)
        return True


def usage(message):
    sys.stderr.write(
        "sftp_wrapper: %s\n"
        "usage: sftp_wrapper.py [--log FILE | --check] MODES SERVER [ARGS...]\n"
        "  MODES: comma-separated, from %s\n" % (message, ", ".join(MODES))
    )
    sys.exit(2)


def main(argv):
    log_path = None
    check = argv[:1] == ["--check"]
    if check:
        argv = argv[1:]
    elif argv[:1] == ["--log"]:
        if len(argv) < 2:
            usage("--log needs a file")
        log_path = argv[1]
        argv = argv[2:]
    if len(argv) < 2:
        usage("missing MODES or SERVER")
    modes = [m.strip() for m in argv[0].split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if not modes or unknown:
        usage("unknown mode(s) %r" % (unknown or argv[0]))
    if check:
        if not os.access(argv[1], os.X_OK):
            usage("server %r is not executable" % argv[1])
        sys.exit(0)

    log = Log(log_path)
    wrapper = Wrapper(set(modes), argv[1:], log)
    log.line("started: modes=%s server=%s" % (",".join(modes), " ".join(argv[1:])))

    requests = threading.Thread(target=wrapper.pump_requests, daemon=True)
    requests.start()
    wrapper.pump_replies()
    code = wrapper.server.wait()
    log.line("server exited with status %d" % code)
    # os._exit: the request thread may still block on stdin.
    os._exit(code if code >= 0 else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
