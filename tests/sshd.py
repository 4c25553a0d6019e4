"""Three real ``sshd`` hosts on 127.0.0.2–4 for the Ansible tests (Debian openssh-server).

Each host is its own ``sshd -D`` process with a host key, a client key in
``authorized_keys`` and a directory of its own; all of it lives in one temp dir that is
removed afterwards. An ``ansible.cfg`` there turns host key checking off, as a lab
inventory would; the tests point ``ANSIBLE_CONFIG`` at it through the target's
``config`` field.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers import ServerUnavailableError, _terminate

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


@dataclass(frozen=True)
class SshHost:
    name: str
    address: str
    port: int
    directory: Path


@dataclass(frozen=True)
class SshFleet:
    hosts: tuple[SshHost, ...]
    key: Path
    config: Path
    root: Path

    def inventory(self) -> dict[str, dict[str, object]]:
        """Host name → connection variables, as a pipelines file declares them."""
        return {
            h.name: {
                "ansible_host": h.address,
                "ansible_port": h.port,
                "ansible_user": "root",
                "ansible_connection": "ssh",
                "ansible_ssh_private_key_file": str(self.key),
                "ansible_python_interpreter": "/usr/bin/python3",
                "logdir": str(h.directory),
            }
            for h in self.hosts
        }


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _wait_banner(address: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"sshd on {address}:{port} exited: {err.strip()[-400:]}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), 0.5) as s:
            if s.recv(16).startswith(b"SSH-"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd on {address}:{port} did not answer within {timeout:g}s")


@contextlib.contextmanager
def ssh_fleet(startup_timeout: float = 15.0) -> Iterator[SshFleet]:
    """Start one sshd per address (key auth only, root login) and yield the fleet."""
    sshd = "/usr/sbin/sshd"
    if not os.path.exists(sshd) or shutil.which("ssh-keygen") is None:
        raise ServerUnavailableError("sshd not found: install it (apt-get install openssh-server)")
    if os.geteuid() != 0:
        raise ServerUnavailableError("the sshd fixture needs root (sshd drops privileges)")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    root = Path(tempfile.mkdtemp(prefix="autofix-sshd-"))
    os.chmod(root, 0o700)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        key = root / "client_key"
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        subprocess.run([*keygen, "-f", str(key)], check=True)
        subprocess.run([*keygen, "-f", str(root / "host_key")], check=True)
        authorized = root / "authorized_keys"
        shutil.copy(key.with_suffix(".pub"), authorized)
        (root / "ansible.cfg").write_text(
            "[defaults]\nhost_key_checking = False\nretry_files_enabled = False\n"
            "interpreter_python = /usr/bin/python3\n"
            "[ssh_connection]\n"
            "ssh_args = -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o ControlMaster=auto -o ControlPersist=60s\n"
            f"control_path_dir = {root}/cp\npipelining = True\n"
        )
        hosts = []
        for i, address in enumerate(ADDRESSES, start=1):
            name = f"web{i}"
            port = _free_port(address)
            directory = root / name
            directory.mkdir()
            config = root / f"sshd_{name}.conf"
            config.write_text(
                f"ListenAddress {address}:{port}\n"
                f"HostKey {root / 'host_key'}\n"
                f"PidFile {root / f'{name}.pid'}\n"
                f"AuthorizedKeysFile {authorized}\n"
                "PermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "UsePAM no\nStrictModes no\nPrintMotd no\n"
                "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
            )
            proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            procs.append(proc)
            _wait_banner(address, port, proc, startup_timeout)
            hosts.append(SshHost(name, address, port, directory))
        yield SshFleet(tuple(hosts), key, root / "ansible.cfg", root)
    finally:
        for proc in procs:
            _terminate(proc)
            if proc.stderr is not None:
                proc.stderr.close()
        shutil.rmtree(root, ignore_errors=True)
