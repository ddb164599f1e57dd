"""`run(args, ...)`: `subprocess.run` for `python -m seqjax...` commands, started warm.

A command such as `python -m seqjax.main ...` spends seconds importing JAX, flax,
optax and orbax before it reads its first flag, and the suite runs dozens of them.
So each test process keeps one server that has imported those libraries (not seqjax
itself, and without starting a JAX backend, so that a child still chooses its devices
through XLA_FLAGS) and forks it once per command. The child takes the command's
working directory, environment, stdin and output files, and runs the module or code
as `python -m` or `python -c` would: as `__main__`, with `sys.argv`, `sys.orig_argv`
and `sys.path[0]` set alike. It exits as the interpreter does, waiting for its
threads, running its atexit handlers and flushing its output, but without finalising
every module: what only that prints (a `__del__`, an abandoned asyncio task) is not
seen, so a test that checks for it passes `fresh=True`.

A fresh interpreter also runs a command with interpreter options, one whose module
the server has imported, and one whose environment differs from the server's in what
Python, numpy or JAX read as they start (`FRESH_ENVIRONMENT`). Processes that a test
signals are started by the test itself (`subprocess.Popen`).

Run as a script, this file is the server. It answers a line of the modules it has
imported, then reads one JSON request a line on stdin and answers each with the
child's pid, then its exit code (killed at the request's timeout), a JSON line each.
"""

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import types

# What every seqjax command imports before it reads its flags; seqjax is imported by
# each child, so that its import-time setup sees the command line (`sys.orig_argv`).
PRELOAD = ("numpy", "jax", "jax.numpy", "flax.linen", "optax", "orbax.checkpoint",
           "absl.app", "ml_collections.config_flags")
# Environment variables read once, as Python, numpy (OpenBLAS) or JAX start or import.
FRESH_ENVIRONMENT = ("JAX_", "PYTHON", "OPENBLAS_", "OMP_", "MKL_", "GOTO_", "LANG", "LC_",
                     "TZ", "TF_CPP_")

_server: subprocess.Popen | None = None
_server_env: dict[str, str] = {}  # the environment it started with
_preloaded: set[str] = set()  # the modules it has imported
_lock = threading.Lock()


def _read_at_start(env) -> dict[str, str]:
  return {k: v for k, v in env.items() if k.startswith(FRESH_ENVIRONMENT)}


def _warm_command(args) -> tuple[str, str] | None:
  """("module" | "code", its name or text) when the server can run `args`."""
  if len(args) >= 3 and args[0] == sys.executable and args[1] in ("-m", "-c"):
    return ("module" if args[1] == "-m" else "code"), args[2]
  return None


def _start() -> subprocess.Popen:
  """The server of this process, started on first use or after it died."""
  global _server, _server_env, _preloaded
  if _server is None or _server.poll() is not None:
    _server = subprocess.Popen([sys.executable, os.path.abspath(__file__)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               bufsize=1)
    atexit.register(_server.kill)
    _server_env = dict(os.environ)
    _preloaded = set(_reply(_server)["modules"])
  return _server


def _reply(server: subprocess.Popen) -> dict:
  line = server.stdout.readline()
  if not line:
    raise RuntimeError(f"the warm command server exited ({server.wait()}); its error is "
                       "on the stderr of the test that started it")
  return json.loads(line)


def run(args, cwd=None, env=None, timeout=None, input=None, check=False,
        capture_output=True, text=True, fresh=False) -> subprocess.CompletedProcess:
  """`subprocess.run(args, ...)` with its output captured, forked from the warm server
  where it can be (see the module's doc); `fresh=True`: always a new interpreter."""
  args = [os.fspath(a) for a in args]
  env = dict(os.environ if env is None else env)
  warm = _warm_command(args)
  done = None
  if (not fresh and warm and capture_output and hasattr(os, "pidfd_open")  # Linux
      and (cwd is None or os.path.isdir(cwd))):
    with _lock:
      server = _start()
      if (not (warm[0] == "module" and warm[1] in _preloaded)
          and _read_at_start(env) == _read_at_start(_server_env)):
        done = _run_warm(server, warm, args, cwd, env, timeout, input, text)
  if done is None:
    return subprocess.run(args, cwd=cwd, env=env, timeout=timeout, input=input, check=check,
                          capture_output=capture_output, text=text)
  code, timed_out, outputs = done
  if timed_out:
    raise subprocess.TimeoutExpired(args, timeout, *outputs)
  result = subprocess.CompletedProcess(args, code, *outputs)
  if check:
    result.check_returncode()
  return result


def _run_warm(server, warm, args, cwd, env, timeout, input, text):
  """(exit code, whether it timed out, [stdout, stderr]) of `args` run by the server."""
  global _server
  with tempfile.TemporaryDirectory(prefix="seqjax-cli-") as folder:
    files = {name: os.path.join(folder, name) for name in ("stdin", "stdout", "stderr")}
    with open(files["stdin"], "w" if text else "wb") as f:
      f.write(input or ("" if text else b""))
    request = {"kind": warm[0], "what": warm[1], "argv": args,
               "cwd": os.path.abspath(cwd or os.getcwd()), "env": env, "timeout": timeout,
               **files}
    try:
      server.stdin.write(json.dumps(request) + "\n")
      _reply(server)  # its pid: the child runs
      done = _reply(server)
    except BaseException:  # interrupted mid-exchange: a later request cannot trust it
      server.kill()
      _server = None
      raise
    outputs = []
    for name in ("stdout", "stderr"):
      with open(files[name], "r" if text else "rb") as f:
        outputs.append(f.read())
  return done["code"], done["timed_out"], outputs


def _child(request):
  """In the forked child: become the command, run it, and exit as Python would."""
  os.chdir(request["cwd"])
  os.environ.clear()
  os.environ.update(request["env"])
  for fd, name, flags in ((0, "stdin", os.O_RDONLY),
                          (1, "stdout", os.O_WRONLY | os.O_TRUNC),
                          (2, "stderr", os.O_WRONLY | os.O_TRUNC)):
    opened = os.open(request[name], flags | (os.O_CREAT if fd else 0))
    os.dup2(opened, fd)
    os.close(opened)
  code, interrupted = 0, False
  try:
    _run_command(request)
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      code = e.code or 0
    else:
      print(e.code, file=sys.stderr)
      code = 1
  except BaseException as e:  # as the interpreter reports it: this file's frames left out
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
      tb = tb.tb_next
    sys.excepthook(type(e), e.with_traceback(tb), tb)
    code, interrupted = 1, isinstance(e, KeyboardInterrupt)
  threading._shutdown()  # the threads that are not daemons, as the interpreter waits
  atexit._run_exitfuncs()
  sys.stdout.flush()
  sys.stderr.flush()
  if interrupted:  # as Python ends after an uncaught Ctrl-C: by the signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
  os._exit(code)


def _run_command(request):
  import runpy
  sys.orig_argv = [sys.executable, *request["argv"][1:]]
  sys.path[0] = "" if request["kind"] == "code" else os.getcwd()
  sys.modules["__main__"] = types.ModuleType("__main__")  # not the server's
  if request["kind"] == "module":
    sys.argv = [request["what"], *request["argv"][3:]]  # runpy sets argv[0] to its file
    runpy.run_module(request["what"], run_name="__main__", alter_sys=True)
  else:
    sys.argv = ["-c", *request["argv"][3:]]
    exec(compile(request["what"], "<string>", "exec"), sys.modules["__main__"].__dict__)


def _wait(pid: int, timeout: float | None) -> tuple[int, bool]:
  """(exit code, timed out) of the child `pid`, killed once `timeout` seconds pass."""
  timed_out = False
  if timeout is not None:
    pidfd = os.pidfd_open(pid)  # readable once the child exits; it is not reaped yet
    timed_out = not select.select([pidfd], [], [], timeout)[0]
    os.close(pidfd)
    if timed_out:
      os.kill(pid, signal.SIGKILL)
  _, status = os.waitpid(pid, 0)
  return os.waitstatus_to_exitcode(status), timed_out


def _serve():
  """The server's loop: import PRELOAD, then fork a child for each request."""
  import gc
  import importlib
  import warnings
  for module in PRELOAD:
    importlib.import_module(module)
  from jax._src import xla_bridge
  # A backend started here would fix every child's devices and XLA_FLAGS.
  assert not getattr(xla_bridge, "backends_are_initialized", lambda: False)()
  gc.freeze()  # a child's collections then skip the imports' objects
  reply = sys.stdout
  reply.write(json.dumps({"modules": sorted(sys.modules)}) + "\n")
  reply.flush()
  for line in sys.stdin:
    request = json.loads(line)
    # Python 3.12 warns on any fork of a process with a second thread: numpy's OpenBLAS
    # pool, which handles a fork itself.
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", DeprecationWarning)
      pid = os.fork()
    if pid == 0:
      try:
        _child(request)
      finally:
        os._exit(70)  # a failure before the command ran: never back into this loop
    reply.write(json.dumps({"pid": pid}) + "\n")
    reply.flush()
    code, timed_out = _wait(pid, request["timeout"])
    reply.write(json.dumps({"code": code, "timed_out": timed_out}) + "\n")
    reply.flush()


if __name__ == "__main__":
  _serve()
