"""A local MLflow tracking server backed by PostgreSQL (Debian's ``postgresql`` package).

    python scripts/tracking_server.py start [--install] [--dir data/tracking] [--port 5000]
    python scripts/tracking_server.py status
    python scripts/tracking_server.py stop

``start`` initialises a PostgreSQL cluster in ``<dir>/postgres`` (owned by the ``postgres`` user
when run as root: PostgreSQL refuses to run as root), starts it on a free loopback port with its
unix socket in that folder, creates the ``mlflow`` database, starts ``mlflow server`` with that
database as backend store and ``<dir>/artifacts`` as artifact store (proxied: clients upload and
download through the server), waits until ``GET /health`` answers, and prints the line
``MLFLOW_TRACKING_URI=http://127.0.0.1:PORT`` (the only line on stdout: ``export $(... start)``).
State (ports, process ids, paths) is kept in ``<dir>/state.json``; the database password in
``<dir>/postgres.password`` (mode 600). ``stop`` ends the MLflow server by process group and stops
PostgreSQL with ``pg_ctl stop``; the data stay for the next ``start``.

``--install`` installs PostgreSQL with apt-get first when no ``initdb`` is found.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = PROJECT_ROOT / "data" / "tracking"
DEFAULT_PORT = 5000
DB_USER = "postgres"
DATABASE = "mlflow"
HOST = "127.0.0.1"

# Processes started by this Python process, so that stop() can also reap them (no zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # noqa: T201 - progress for people, stdout is the URI


# -- PostgreSQL --------------------------------------------------------------------------------
def find_pg_bin(name: str) -> Path | None:
    """A PostgreSQL binary (initdb, pg_ctl, ...): the newest /usr/lib/postgresql/*/bin first."""

    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parents[1].name
        return tuple(int(x) for x in part.split(".") if x.isdigit())

    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version)[::-1]:
        return Path(candidate)
    found = shutil.which(name)
    return Path(found) if found else None


def install_postgresql() -> None:
    """``apt-get install postgresql`` when no initdb is found (needs root)."""
    if find_pg_bin("initdb") is not None:
        return
    if os.geteuid() != 0:
        raise RuntimeError(
            "PostgreSQL is not installed: run `sudo apt-get install -y postgresql` first"
        )
    _say("Installing PostgreSQL with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env)
    if find_pg_bin("initdb") is None:
        raise RuntimeError("apt-get installed postgresql but no initdb binary was found")


def _as_db_owner(cmd: list[str]) -> list[str]:
    """Run a PostgreSQL binary as the postgres user when we are root (postgres refuses root)."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", DB_USER, "--", *cmd]
    return ["su", DB_USER, "-s", "/bin/sh", "-c", shlex.join(cmd)]


def _chown_to_db_owner(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=DB_USER, group=None)


def _check_traversable(path: Path) -> None:
    """As root, every folder above the cluster must be searchable by the postgres user."""
    if os.geteuid() != 0:
        return
    for parent in path.resolve().parents:
        if not os.stat(parent).st_mode & 0o001:
            raise RuntimeError(
                f"{parent} is not searchable by the postgres user (mode "
                f"{oct(os.stat(parent).st_mode & 0o777)}): choose another --dir"
            )


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 120) -> str:
    result = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on the loopback port (connections in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def db_password(state_dir: Path) -> str:
    """The cluster's superuser password (created once, kept in ``<dir>/postgres.password``)."""
    path = state_dir / "postgres.password"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


def start_postgres(state_dir: Path, port: int) -> Path:
    """Initialise (once) and start the cluster in ``state_dir/postgres``; returns its data dir."""
    initdb, pg_ctl = find_pg_bin("initdb"), find_pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError(
            "PostgreSQL not found (no initdb/pg_ctl under /usr/lib/postgresql/*/bin): "
            "`apt-get install -y postgresql`, or pass --install"
        )
    home = state_dir / "postgres"
    home.mkdir(mode=0o700, exist_ok=True)
    _chown_to_db_owner(home)
    _check_traversable(home)
    pgdata = home / "pgdata"
    password = db_password(state_dir)
    if not (pgdata / "PG_VERSION").exists():
        _say(f"Initialising a PostgreSQL cluster in {pgdata} ...")
        pwfile = home / "initdb.pw"
        pwfile.write_text(password + "\n")
        _chown_to_db_owner(pwfile)
        try:
            _run(
                _as_db_owner(
                    [
                        str(initdb),
                        "-D",
                        str(pgdata),
                        "-U",
                        DB_USER,
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                        "--no-locale",
                    ]
                ),
                cwd=home,
            )
        finally:
            pwfile.unlink(missing_ok=True)
    options = f"-c listen_addresses={HOST} -p {port} -k {shlex.quote(str(home))}"
    _say(f"Starting PostgreSQL on {HOST}:{port} ...")
    _run(
        _as_db_owner(
            [
                str(pg_ctl),
                "-D",
                str(pgdata),
                "-l",
                str(home / "postgres.log"),
                "-o",
                options,
                "-w",
                "-t",
                "120",
                "start",
            ]
        ),
        cwd=home,
        timeout=150,
    )
    return pgdata


def create_database(port: int, password: str, name: str = DATABASE) -> None:
    import psycopg2

    conn = psycopg2.connect(
        host=HOST, port=port, user=DB_USER, password=password, dbname="postgres", connect_timeout=10
    )
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def stop_postgres(pgdata: Path) -> None:
    pg_ctl = find_pg_bin("pg_ctl")
    if pg_ctl is None or not postgres_running(pgdata):
        return
    _say("Stopping PostgreSQL ...")
    _run(
        _as_db_owner([str(pg_ctl), "-D", str(pgdata), "-m", "fast", "-w", "-t", "60", "stop"]),
        cwd=pgdata.parent,
        timeout=90,
    )


def postgres_running(pgdata: Path) -> bool:
    pg_ctl = find_pg_bin("pg_ctl")
    if pg_ctl is None or not pgdata.exists():
        return False
    cmd = _as_db_owner([str(pg_ctl), "-D", str(pgdata), "status"])
    return subprocess.run(cmd, capture_output=True, cwd=pgdata.parent, check=False).returncode == 0


# -- processes ---------------------------------------------------------------------------------
def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from "state" on


def process_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[0] != "Z" and int(stat[2]) == pgid:
                members.append(int(entry.name))
    return members


def _is_mlflow_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"mlflow" in b" ".join(cmdline) and b"server" in cmdline


def stop_process_group(pgid: int, timeout: float = 30) -> None:
    """SIGTERM the group (the MLflow CLI and its uvicorn workers), SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        child = _CHILDREN.get(pgid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=0.2)
            if not group_members(pgid):
                _CHILDREN.pop(pgid, None)
                return
            time.sleep(0.2)
    _CHILDREN.pop(pgid, None)


# -- MLflow server -----------------------------------------------------------------------------
@dataclass
class ServerState:
    state_dir: str
    port: int
    pg_port: int
    pgdata: str
    artifacts: str
    mlflow_pid: int
    database: str = DATABASE

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    def backend_store_uri(self, password: str) -> str:
        return f"postgresql+psycopg2://{DB_USER}:{password}@{HOST}:{self.pg_port}/{self.database}"


def _state_path(state_dir: Path) -> Path:
    return state_dir / "state.json"


def read_state(state_dir: Path) -> ServerState | None:
    path = _state_path(state_dir)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return ServerState(**{f.name: data[f.name] for f in fields(ServerState) if f.name in data})


def _write_state(state: ServerState) -> None:
    state_dir = Path(state.state_dir)
    path = _state_path(state_dir)
    path.write_text(json.dumps({**asdict(state), "tracking_uri": state.tracking_uri}, indent=2))
    path.chmod(0o600)
    (state_dir / "mlflow.pid").write_text(f"{state.mlflow_pid}\n")


def health(uri: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _mlflow_bin() -> str:
    beside = Path(sys.executable).parent / "mlflow"
    if beside.exists():
        return str(beside)
    found = shutil.which("mlflow")
    if found is None:
        raise RuntimeError("the mlflow command was not found (activate the project's venv)")
    return found


def _choose_port(requested: int | None, fallback: int | None) -> int:
    """The requested port (which must be free), else ``fallback`` if free, else any free port."""
    if requested:
        if not port_is_free(requested):
            raise RuntimeError(f"port {requested} is in use")
        return requested
    if fallback and port_is_free(fallback):
        return fallback
    return free_port()


def start(
    state_dir: Path = DEFAULT_DIR,
    port: int | None = None,
    pg_port: int | None = None,
    install: bool = False,
    wait_s: float = 240,
) -> ServerState:
    """Start PostgreSQL and the MLflow server (or return the running one)."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    previous = read_state(state_dir)
    if previous and process_alive(previous.mlflow_pid) and health(previous.tracking_uri):
        _say(f"Already running (pid {previous.mlflow_pid}).")
        return previous
    if previous:  # stale: a crash or a reboot; stop what may be left and start again
        stop(state_dir, quiet=True)
    if install:
        install_postgresql()
    port = _choose_port(port, DEFAULT_PORT if previous is None else previous.port)
    pg_port = pg_port or free_port()
    while pg_port == port:
        pg_port = free_port()
    pgdata = start_postgres(state_dir, pg_port)
    process = None
    try:
        password = db_password(state_dir)
        create_database(pg_port, password)
        artifacts = state_dir / "artifacts"
        artifacts.mkdir(exist_ok=True)
        state = ServerState(
            state_dir=str(state_dir),
            port=port,
            pg_port=pg_port,
            pgdata=str(pgdata),
            artifacts=str(artifacts),
            mlflow_pid=0,
        )
        # The store URI holds the password: pass it in the environment, not on the command line.
        env = {
            **os.environ,
            "MLFLOW_BACKEND_STORE_URI": state.backend_store_uri(password),
            "MLFLOW_WORKERS": "1",
        }
        # MLflow 3's job runner (GenAI scorers; 7 huey worker processes) is not needed here.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        cmd = [
            _mlflow_bin(),
            "server",
            "--artifacts-destination",
            str(artifacts),
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        _say(f"Starting the MLflow server on {state.tracking_uri} ...")
        with open(state_dir / "mlflow.log", "ab") as log:
            process = subprocess.Popen(
                cmd,
                cwd=state_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _CHILDREN[process.pid] = process
        state.mlflow_pid = process.pid
        _write_state(state)
        deadline = time.monotonic() + wait_s
        while not health(state.tracking_uri):
            if process.poll() is not None or time.monotonic() > deadline:
                log_tail = (state_dir / "mlflow.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the MLflow server did not become healthy:\n{log_tail}")
            time.sleep(0.5)
    except BaseException:
        if process is not None:
            stop_process_group(process.pid)
        stop_postgres(pgdata)
        raise
    return state


def stop(state_dir: Path = DEFAULT_DIR, quiet: bool = False) -> None:
    """Stop the MLflow server (its whole process group) and PostgreSQL; keep the data."""
    state_dir = Path(state_dir).resolve()
    state = read_state(state_dir)
    if state is None:
        if not quiet:
            _say(f"No tracking server state in {state_dir}.")
        return
    if state.mlflow_pid and (state.mlflow_pid in _CHILDREN or _is_mlflow_server(state.mlflow_pid)):
        if not quiet:
            _say(f"Stopping the MLflow server (process group {state.mlflow_pid}) ...")
        stop_process_group(state.mlflow_pid)
    (state_dir / "mlflow.pid").unlink(missing_ok=True)
    stop_postgres(Path(state.pgdata))


def status(state_dir: Path = DEFAULT_DIR) -> bool:
    state = read_state(Path(state_dir).resolve())
    if state is None:
        _say("Not started.")
        return False
    server_up = process_alive(state.mlflow_pid) and health(state.tracking_uri)
    pg_up = postgres_running(Path(state.pgdata))
    _say(
        f"MLflow server {state.tracking_uri} (pid {state.mlflow_pid}): "
        f"{'healthy' if server_up else 'down'}\n"
        f"PostgreSQL {HOST}:{state.pg_port} ({state.pgdata}): {'running' if pg_up else 'stopped'}\n"
        f"Artifacts: {state.artifacts}"
    )
    if server_up:
        print(f"MLFLOW_TRACKING_URI={state.tracking_uri}")  # noqa: T201
    return server_up and pg_up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state and data folder")
    parser.add_argument(
        "--port", type=int, default=None, help=f"MLflow port (default {DEFAULT_PORT} if free)"
    )
    parser.add_argument(
        "--pg-port", type=int, default=None, help="PostgreSQL port (default: a free one)"
    )
    parser.add_argument(
        "--install", action="store_true", help="apt-get install postgresql if missing"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            state = start(args.dir, port=args.port, pg_port=args.pg_port, install=args.install)
            _say(f"Logs: {state.state_dir}/mlflow.log; stop with `make tracking-server-stop`.")
            print(f"MLFLOW_TRACKING_URI={state.tracking_uri}")  # noqa: T201
            return 0
        if args.command == "stop":
            stop(args.dir)
            return 0
        return 0 if status(args.dir) else 1
    except RuntimeError as error:
        _say(f"error: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
