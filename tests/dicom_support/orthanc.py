"""A throw-away Orthanc PACS (Debian's ``orthanc`` and ``orthanc-dicomweb``) for the tests.

:class:`OrthancServer` writes a configuration into a temporary folder (storage and
index there too), starts ``Orthanc`` on a free port of 127.0.0.1 with only its
HTTP server and the DICOMweb plugin (no DICOM port, no WebDAV, no remote
access), waits until it answers, and stops it by its PID. Orthanc 1.10 has no
bind-address option, so the server is started with ``bind_loopback.so``
preloaded, which turns its wildcard bind into a loopback bind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SHIM_SOURCE = Path(__file__).with_name("bind_loopback.c")


def orthanc_installed() -> bool:
    """Whether Orthanc, its DICOMweb plugin and a C compiler (for the loopback shim) are present."""
    return Path(ORTHANC).is_file() and DICOMWEB_PLUGIN.is_file() and shutil.which("cc") is not None


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OrthancServer:
    """One Orthanc process; :meth:`start` and :meth:`stop` may be called again (same storage, same port)."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.shim = folder / "bind_loopback.so"
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(self.shim), str(SHIM_SOURCE), "-ldl"], check=True)
        storage = folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "medseg-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomServerEnabled": False, "WebDavEnabled": False, "OrthancExplorerEnabled": False,
            "HttpThreadsCount": 8, "ConcurrentJobs": 1, "StableAge": 1,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Host": "127.0.0.1"},
        }))

    @property
    def url(self) -> str:
        """The DICOMweb base URL."""
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start Orthanc and wait until its REST API answers."""
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 - kept open for the process's lifetime
        env = {**os.environ, "LD_PRELOAD": str(self.shim)}
        # setpriv: the kernel stops Orthanc when the test process dies, even by SIGKILL (setpriv execs it: same PID)
        guard = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []
        self.process = subprocess.Popen([*guard, ORTHANC, str(self.config)], stdout=log, stderr=log, env=env)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: see {self.folder / 'orthanc.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/system", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout_s:g} s: see {self.folder / 'orthanc.log'}")

    def stop(self) -> None:
        """Stop the process by its PID (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def listening_addresses(self) -> set[str]:
        """Local addresses of the process's listening TCP sockets (from /proc/net/tcp{,6})."""
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port = local.split(":")
                if state == "0A" and int(port, 16) == self.port:  # 0A: LISTEN
                    found.add(address)
        return found

    def count(self, level: str) -> int:
        """How many ``level`` (``patients``, ``studies``, ``series``, ``instances``) the server holds."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{level}", timeout=10) as answer:
            return len(json.loads(answer.read()))
