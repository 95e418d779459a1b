#!/usr/bin/env python3
"""Runs a command with a pseudo-terminal as its stdin, stdout and stderr,
copying what it writes there to our stdout as it comes; for
client/tests/cli_status.rs, which must see what a terminal user sees.

Usage: in_pty.py COMMAND [ARGS...]
The command is killed when our stdin closes (the test is done with it).
"""

import os
import pty
import select
import subprocess
import sys

master, slave = pty.openpty()
child = subprocess.Popen(sys.argv[1:], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
os.close(slave)
out = sys.stdout.buffer
try:
    while True:
        ready, _, _ = select.select([master, sys.stdin], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
            break
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not data:
                break
            out.write(data)
            out.flush()
finally:
    child.kill()
    child.wait()
