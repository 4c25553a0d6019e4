"""The control plane: ``autofix serve`` owns the store, every other client goes through it.

DuckDB lets one process write the store. The service that owns it announces itself in
the store's owner record (``autofix.control.owner``: PID, control socket, API URL) and
listens on a Unix socket beside the store (mode 0600; the peer's uid is checked). The
``autofix`` command finds the owner there and, instead of opening the file, hands the
whole command line to it (``autofix.control.client``); the service runs the same Typer
command in-process against its live store and executor and streams stdout, stderr and
the exit code back (``autofix.control.server``) — same output, same ``--json``, same
exit codes as without a service. From another host, ``AUTOFIX_URL`` + ``AUTOFIX_TOKEN``
send the same request to ``POST /api/v1/cli`` (viewer tokens run reads only).

    client.py   the CLI side: which commands go to the service, and sending them
    server.py   the service side: the socket listener and running one request
    session.py  what a command run for a client sees (its store, settings, consoles)
    owner.py    the owner record beside the store
"""
