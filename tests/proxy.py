"""The reverse proxy of deploy/nginx/ as a real nginx process, for the tests (and, as a command,
for running the template under the host's nginx by hand; .ci/containers.sh runs the compose
proxy itself).

The template is rendered as the official nginx image renders /etc/nginx/templates/ (envsubst
of the given variables only) and included in a minimal main configuration that keeps the pid,
logs and temp files in one directory, so the host's nginx runs without touching /etc/nginx or
/var. The same file docker-compose.yml mounts, so what the tests check is what compose runs.

    python -m tests.proxy DIRECTORY NAME=VALUE...   # writes DIRECTORY/nginx.conf, prints its path
"""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "nginx" / "conversations.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# The template's variables (docker-compose.yml sets each for the `proxy` service).
VARIABLES = ("PROXY_LISTEN", "PROXY_UPSTREAM", "PROXY_CLIENT_TIMEOUT", "MAX_BODY_BYTES")

MAIN = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/conversations.conf;
}}
"""


def render(template, variables):
    """The template with `${NAME}` and `$NAME` replaced for each NAME in `variables` (a
    mapping of str to str), everything else left as it is: what envsubst does in the nginx
    image. Raises ValueError when one of VARIABLES is not given."""
    missing = [name for name in VARIABLES if name not in variables]
    if missing:
        raise ValueError(f"the proxy template needs {', '.join(missing)}")

    def substitute(match):
        name = match.group(1) or match.group(2)
        return str(variables[name]) if name in variables else match.group(0)

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", substitute, template)


def write_config(directory, variables):
    """Write `directory`/conversations.conf (the rendered template) and `directory`/nginx.conf
    (the main file including it); returns the path of nginx.conf."""
    directory = Path(directory)
    (directory / "conversations.conf").write_text(render(TEMPLATE.read_text(), variables))
    # As root, nginx would run its workers as "nobody", which cannot reach a private temp
    # directory; workers of the invoking user can.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    conf = directory / "nginx.conf"
    conf.write_text(MAIN.format(dir=directory, user=user))
    return conf


def command(conf):
    """The command line running nginx in the foreground on `conf` (prefix: its directory)."""
    directory = Path(conf).parent
    log = directory / "error.log"
    return [NGINX, "-p", str(directory), "-e", str(log), "-c", str(conf), "-g", "daemon off;"]


class Proxy:
    """nginx on 127.0.0.1:`port` in front of `upstream` ("host:port"); `variables` override
    the template's other settings (PROXY_CLIENT_TIMEOUT, MAX_BODY_BYTES)."""

    def __init__(self, port, upstream, **variables):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.directory = Path(tempfile.mkdtemp(prefix="conversations-nginx-"))
        self.variables = {
            "PROXY_LISTEN": f"127.0.0.1:{port}",
            "PROXY_UPSTREAM": upstream,
            "PROXY_CLIENT_TIMEOUT": "5s",
            "MAX_BODY_BYTES": "1048576",
            **variables,
        }
        self.process = None

    def start(self, timeout=10):
        conf = write_config(self.directory, self.variables)
        with open(self.directory / "stdout.log", "ab") as log:
            self.process = subprocess.Popen(
                command(conf), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited {self.process.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen on {self.port}: {self.log()}")

    def log(self):
        """nginx's error log so far (for failure messages)."""
        path = self.directory / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def main(argv):
    directory, *pairs = argv
    variables = dict(pair.split("=", 1) for pair in pairs)
    print(write_config(directory, variables))


if __name__ == "__main__":
    main(sys.argv[1:])
