"""Warm starts for the processes the tests start: a server imports torch once and forks each run.

Every start of ``python -m trainer.train`` spends about 5.5 s of CPU on imports before its first step
(torch 3.5 s, torch._dynamo 2 s: every torch optimizer imports it), more than the few steps a test
trains; the suite starts a few hundred such processes. Here a server process imports torch and its
usual company once (``PRELOAD``); each start of a listed module (``WARM_MODULES``) is then a fork of
that server which becomes the requested command: its own pid (and session if asked), the test's
pipes as its stdin/stdout/stderr, its cwd, environment and argv, ``runpy`` running the module as
``__main__``, the interpreter's exit sequence (non-daemon threads, atexit, flush; death by SIGINT
after an uncaught KeyboardInterrupt). Nothing of ours is imported in a server, so the code under
test (a snapshot's too) is imported fresh by each run.

The libraries read some environment variables when they are imported (thread counts, paths,
``PYTHON*``, ``TORCH*``: ``SENSITIVE``), so each pytest worker keeps one server per distinct set of
those (``server_key``; at most ``MAX_SERVERS``), started by the first start that needs it. A start
is cold (a plain ``exec``) where a warm one could differ otherwise: another interpreter, options
other than ``-u``, a module not listed, ``shell``/``preexec_fn``/``pass_fds``/user or group changes.
``TESTS_WARM_START=0`` makes every start cold (in one start's own environment: that start);
``TESTS_WARM_START_LOG=FILE`` lists each start of a listed module, warm or cold. What still differs
from a cold start, and why no test depends on it:
the run's parent is the server, not the test (the test waits for it, signals it and reads its exit
status through the same ``Popen``); /proc/PID/environ and /proc/PID/cmdline show the server's
(``os.environ`` and ``sys.argv`` are the requested ones); an uncaught exception's traceback starts
at the module's own frame (``python -m`` shows two ``<frozen runpy>`` frames before it).

Used as ``subprocess.Popen`` by tests/conftest.py; a server is ``python tests/warmstart.py SOCKET``.
"""

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

WARM_MODULES = frozenset({"trainer.train", "trainer.evaluate", "trainer.enhance", "trainer.import_checkpoint",
                          "torch.distributed.run"})
WARM_SCRIPTS = frozenset({"benchmarks/gpu_acceptance.py", "benchmarks/bench_throughput.py",
                          "benchmarks/bench_train_step.py", "benchmarks/profile_step.py"})  # by their last 2 parts
# (Not KMP_*: torch's Linux wheels load GNU libgomp, not Intel's OpenMP; joblib's import sets
# KMP_INIT_AT_FORK in the worker's environment part-way through a run.)
SENSITIVE = ("PYTHON", "TORCH", "PYTORCH", "OMP_", "MKL_", "OPENBLAS_", "GOMP_", "CUDA", "NCCL", "LD_",
             "MALLOC", "TRITON", "NUMEXPR", "LANG", "LC_", "TMPDIR", "HOME", "USER", "LOGNAME", "XDG_")
PRELOAD = ("numpy", "scipy.signal", "torch", "torch._dynamo", "torch.optim", "torch.distributed",
           "torch.nn.parallel", "torch.utils.data", "torch.utils.tensorboard", "torchaudio", "soundfile", "h5py",
           "pesq", "pystoi", "yaml", "joblib.externals.loky")
MAX_SERVERS = 4  # per pytest worker (each holds ~420 MB of its own), one per SENSITIVE environment; then cold
READY_TIMEOUT = 600.0  # a hang guard for a server's imports on a loaded machine
_DIED = 255 << 8  # the wait status reported when the server went away before the run ended


# A request sets PYTHONUNBUFFERED itself. Inductor reads its cache directories when it compiles, from the
# run's own environment (torch/_inductor/runtime/cache_dir_utils.py); the first compile in a pytest
# worker writes TORCHINDUCTOR_CACHE_DIR into the worker's environment, which would otherwise cost a
# second server for every later start.
_NOT_READ_BY_IMPORTS = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "TORCHINDUCTOR_CACHE_DIR",
                                  "TRITON_CACHE_DIR"})


def server_key(env: dict) -> tuple:
    """What a server's imports may have read from its environment: a start needs a server with the same."""
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(SENSITIVE) and k not in _NOT_READ_BY_IMPORTS))


# ----------------------------------------------------------------------------------------- client side

class _Server:
    """A warm-start server: its imports done in ``env``; started by the first start that needs it."""

    def __init__(self, env: dict):
        import tempfile

        self.path = os.path.join(tempfile.mkdtemp(prefix="warmstart-"), "server.sock")
        self.proc = _ColdPopen([sys.executable, os.path.abspath(__file__), self.path], env=env,
                               stdin=subprocess.DEVNULL, start_new_session=True)
        self.failed = False
        atexit.register(self.stop)

    def address(self) -> str | None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.failed and not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.failed = True
                sys.stderr.write(f"tests/warmstart.py: a server did not start (exit {self.proc.poll()}); "
                                 "its starts are cold from now on\n")
            time.sleep(0.02)
        return None if self.failed else self.path

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the server and any run it still serves
            except ProcessLookupError:
                pass
            self.proc.wait()


_ColdPopen = subprocess.Popen
_SERVERS: dict[tuple, _Server] = {}


def server_address(env: dict) -> str | None:
    """The socket of this process's server for ``env`` (started now if there is none yet), or None."""
    key = server_key(env)
    if key not in _SERVERS:
        if len(_SERVERS) >= MAX_SERVERS:
            return None
        _SERVERS[key] = _Server(env)
    return _SERVERS[key].address()


def warm_request(args, executable, preexec_fn, pass_fds, cwd, env, shell, gid, gids, uid, umask,
                 process_group) -> dict | None:
    """The server's request for this start, or None where it must be cold (see the module's doc)."""
    if shell or preexec_fn is not None or executable is not None or pass_fds or gid is not None or gids \
            or uid is not None or umask >= 0 or process_group not in (None, -1) or isinstance(args, (str, bytes)):
        return None
    argv = [os.fsdecode(a) for a in args]
    if not argv or os.path.realpath(argv[0]) != os.path.realpath(sys.executable):
        return None
    rest, unbuffered = argv[1:], False
    while rest and rest[0] == "-u":
        rest, unbuffered = rest[1:], True
    cwd = os.path.abspath(os.fsdecode(cwd or os.curdir))
    if len(rest) >= 2 and rest[0] == "-m" and rest[1] in WARM_MODULES:
        target = {"module": rest[1], "args": rest[2:]}
    elif rest and "/".join(os.path.normpath(rest[0]).split(os.sep)[-2:]) in WARM_SCRIPTS:
        target = {"script": rest[0], "args": rest[1:]}
    else:
        return None
    env = {os.fsdecode(k): os.fsdecode(v) for k, v in (os.environ if env is None else env).items()}
    if "0" in (os.environ.get("TESTS_WARM_START"), env.get("TESTS_WARM_START")):  # all off, or this start
        return None  # (a one-off environment, where a server would cost more than it saves)
    return {**target, "env": env, "cwd": cwd, "unbuffered": unbuffered or bool(env.get("PYTHONUNBUFFERED"))}


def _note(args, warm: bool) -> None:
    """With TESTS_WARM_START_LOG=FILE: one line per start of a listed module, warm or cold."""
    log = os.environ.get("TESTS_WARM_START_LOG")
    listed = WARM_MODULES | {os.path.basename(name) for name in WARM_SCRIPTS}
    if not log or isinstance(args, (str, bytes)) or not listed & {os.path.basename(os.fsdecode(a)) for a in args}:
        return
    with open(log, "a") as f:
        f.write(json.dumps({"warm": warm, "args": [os.fsdecode(a) for a in args[:4]], "servers": len(_SERVERS),
                            "test": os.environ.get("PYTEST_CURRENT_TEST", "")}) + "\n")


class WarmPopen(subprocess.Popen):
    """``subprocess.Popen`` that starts the listed modules as forks of the warm server."""

    _warm = None  # the connection to the server while a warm run is ours
    _warm_status = None

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                       creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
                       restore_signals, gid, gids, uid, umask, start_new_session, *rest):
        process_group = rest[0] if rest else None
        request = warm_request(args, executable, preexec_fn, pass_fds, cwd, env, shell, gid, gids, uid, umask,
                               process_group)
        address = server_address(request["env"]) if request is not None else None
        _note(args, address is not None)
        if address is None:
            return super()._execute_child(args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                                          creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread,
                                          errwrite, restore_signals, gid, gids, uid, umask, start_new_session,
                                          *rest)
        request["new_session"], request["server"] = bool(start_new_session), address
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(address)
            socket.send_fds(conn, [json.dumps(request).encode()],
                            [p2cread if p2cread != -1 else 0, c2pwrite if c2pwrite != -1 else 1,
                             errwrite if errwrite != -1 else 2])
            reply = json.loads(conn.recv(1 << 16) or b"{}")
        except BaseException:
            conn.close()
            raise
        if "pid" not in reply:
            conn.close()
            raise OSError(f"tests/warmstart.py: the server refused {args!r}: {reply.get('error', 'no reply')}")
        self.pid, self._child_created, self._warm = reply["pid"], True, conn
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)

    def _try_wait(self, wait_flags):
        """The run's wait status as the server reports it (``(0, 0)`` while it runs and WNOHANG)."""
        if self._warm is None:
            return super()._try_wait(wait_flags)
        if self._warm_status is None:
            self._warm.setblocking(not wait_flags & os.WNOHANG)
            try:
                data = self._warm.recv(1 << 12)
            except BlockingIOError:
                return 0, 0
            self._warm_status = json.loads(data)["status"] if data else _DIED
            self._warm.close()
        return self.pid, self._warm_status

    def _internal_poll(self, _deadstate=None, **kwargs):
        if self._warm is None:
            return super()._internal_poll(_deadstate, **kwargs)
        if self.returncode is None and self._waitpid_lock.acquire(False):
            try:
                if self.returncode is None:
                    pid, status = self._try_wait(os.WNOHANG)
                    if pid == self.pid:
                        self._handle_exitstatus(status)
            finally:
                self._waitpid_lock.release()
        return self.returncode


# ----------------------------------------------------------------------------------------- server side

def serve(path: str) -> None:
    import importlib

    sys.path[0] = os.getcwd()  # as for ``python -m``: not tests/, whose folders would shadow modules
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    library_fds = {int(fd) for fd in os.listdir("/proc/self/fd")}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)  # ready
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    runs: dict[int, socket.socket] = {}
    parent = os.getppid()
    while os.getppid() == parent:  # the pytest worker may die without stopping its servers
        readable, _, _ = select.select([listener, wake_read], [], [], 5.0)
        if wake_read in readable:
            while True:
                try:
                    if not os.read(wake_read, 512):
                        break
                except BlockingIOError:
                    break
        _report_ended(runs)
        if listener in readable:
            _accept(listener, runs, library_fds)


def _report_ended(runs: dict) -> None:
    for pid in list(runs):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            conn = runs.pop(pid)
            try:
                conn.send(json.dumps({"status": status}).encode())
            except OSError:
                pass  # the test is gone
            conn.close()


def _accept(listener, runs: dict, library_fds: set) -> None:
    conn, _ = listener.accept()
    try:
        message, fds, _, _ = socket.recv_fds(conn, 1 << 22, 3)
        request = json.loads(message)
    except (OSError, ValueError) as exc:
        conn.close()
        return sys.stderr.write(f"tests/warmstart.py: bad request: {exc}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _become(request, fds, library_fds)  # never returns
    for fd in fds:
        os.close(fd)
    conn.send(json.dumps({"pid": pid}).encode())
    runs[pid] = conn


def _become(request: dict, fds: list[int], library_fds: set) -> None:
    """In the forked child: turn into ``python [-u] -m MODULE ARGS`` (or ``python [-u] SCRIPT ARGS``) as
    requested, run it, exit."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if request["new_session"]:
            os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in {int(f) for f in os.listdir("/proc/self/fd")} - library_fds - {0, 1, 2}:
            try:
                os.close(fd)
            except OSError:
                pass
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _fresh_state(request["unbuffered"])
        if request.get("module") != "torch.distributed.run":  # its ranks stay the agent's children
            _serve_own_starts(request)
        if "module" in request:
            sys.argv, sys.path[0] = ["-m", *request["args"]], request["cwd"]
            code = _run_main(request["module"], None)
        else:
            sys.argv = [request["script"], *request["args"]]
            sys.path[0] = os.path.dirname(os.path.abspath(request["script"]))
            code = _run_main(None, request["script"])
    except BaseException:  # the machinery above failed: say so where the test looks
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _fresh_state(unbuffered: bool) -> None:
    """What a new interpreter would have that the fork inherited from the server otherwise."""
    import io
    import tempfile

    tempfile.tempdir = None
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # the legacy global generator, seeded from the OS as at import
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        old = getattr(sys, name)
        binary = open(fd, "rb" if fd == 0 else "wb", buffering=0 if unbuffered and fd else -1, closefd=False)
        stream = io.TextIOWrapper(binary, encoding=old.encoding, errors=old.errors,
                                  line_buffering=fd == 2 or (fd == 1 and os.isatty(1)),
                                  write_through=unbuffered and fd != 0)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _serve_own_starts(request: dict) -> None:
    """A warm run's own starts of listed commands (a benchmark's trainings) are warm too, from the
    server it came from (a start needing another environment is cold)."""
    global MAX_SERVERS

    _SERVERS.clear()
    _SERVERS[server_key(request["env"])] = _Known(request["server"])
    MAX_SERVERS = 0
    subprocess.Popen = WarmPopen


class _Known:
    def __init__(self, path: str):
        self.path = path

    def address(self) -> str:
        return self.path


def _run_main(module: str | None, script: str | None) -> int:
    """Run MODULE or SCRIPT as ``__main__`` and end the way the interpreter ends; the exit code."""
    import importlib.util
    import runpy
    import traceback

    code, interrupted = 0, False
    origin = importlib.util.find_spec(module).origin if module else script
    try:
        if module:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:  # the traceback from the module's frames on, as ``python -m`` shows it
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != origin:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
        interrupted, code = isinstance(exc, KeyboardInterrupt), 1
    threading._shutdown()  # the interpreter's exit: wait for non-daemon threads, then atexit, then flush
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code & 0xFF


if __name__ == "__main__":
    serve(sys.argv[1])
