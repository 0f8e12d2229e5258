"""gunicorn command-line options that depend on the installed gunicorn's version.

The benchmarks start gunicorn as a child process with the gunicorn that the
project's range admits, from 23 on; an option that a release does not know
ends the server at once ("unrecognized arguments").
"""

from __future__ import annotations

from gunicorn.config import KNOWN_SETTINGS

#: gunicorn 25.1 and newer open a control socket at a fixed path, which two servers at once
#: would share; the releases before it have neither the socket nor the flag.
NO_CONTROL_SOCKET: list[str] = (
    ["--no-control-socket"]
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS) else [])
