"""`run(args, ...)`: `subprocess.run` for `python -m seqjax...` commands, started warm.

A command such as `python -m seqjax.main ...` spends seconds importing JAX, flax,
optax and orbax before it reads its first flag, and the suite runs dozens of them.
So each test process keeps one server that has imported those libraries (without
starting a JAX backend, so that a child can still choose its devices through
XLA_FLAGS) and forks it once per command. The child takes the command's working
directory, environment, stdin and output files, and runs the module or code as
`python -m` or `python -c` would: as `__main__`, with `sys.argv` and `sys.path[0]`
set alike, and exits as the interpreter would (atexit handlers run, output flushed).

A fresh interpreter still runs a command with interpreter options, one whose module
the server has imported already (it would be imported twice), one whose environment
differs from the server's in what Python or JAX read as they start (`PYTHON*`,
`JAX_*`), and every process that a test signals (those use `subprocess.Popen`).

Run as a script, this file is the server: one JSON request a line on stdin, and for
each the child's pid, then its exit code, a JSON line each on stdout.
"""

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
import types

# What every seqjax command imports before it reads its flags. Not the command
# modules themselves (seqjax.main, .sweep, .bench, ...): each runs as `__main__`.
PRELOAD = ("jax", "jax.numpy", "flax.linen", "optax", "orbax.checkpoint", "absl.app",
           "ml_collections.config_flags", "seqjax.config.cli", "seqjax.train.trainer")

_server: subprocess.Popen | None = None
_server_env: dict[str, str] = {}  # the environment it started with
_preloaded: set[str] = set()  # the modules it has imported
_lock = threading.Lock()


def _environment_read_at_import(env) -> dict[str, str]:
  """What Python and JAX read from the environment as they start and import."""
  return {k: v for k, v in env.items() if k.startswith(("JAX_", "PYTHON"))}


def _warm_command(args) -> tuple[str, str] | None:
  """("module" | "code", its name or text) when the server can run `args`."""
  if len(args) >= 3 and args[0] == sys.executable and args[1] in ("-m", "-c"):
    return ("module" if args[1] == "-m" else "code"), args[2]
  return None


def _start() -> subprocess.Popen:
  global _server, _server_env, _preloaded
  if _server is None or _server.poll() is not None:
    _server = subprocess.Popen([sys.executable, os.path.abspath(__file__)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               bufsize=1)
    atexit.register(_server.kill)
    _server_env = dict(os.environ)
    _preloaded = set(json.loads(_server.stdout.readline())["modules"])
  return _server


def run(args, cwd=None, env=None, timeout=None, input=None, check=False,
        capture_output=True, text=True) -> subprocess.CompletedProcess:
  """`subprocess.run(args, cwd=..., env=..., timeout=..., capture_output=True,
  text=True)`, forked from the warm server where it can be (see the module's doc)."""
  env = dict(os.environ if env is None else env)
  warm = _warm_command(args)
  with _lock:
    server = _start() if warm else None
    if (not warm or not capture_output
        or (warm[0] == "module" and warm[1] in _preloaded)
        or _environment_read_at_import(env) != _environment_read_at_import(_server_env)):
      return subprocess.run(args, cwd=cwd, env=env, timeout=timeout, input=input, check=check,
                            capture_output=capture_output, text=text)
    with tempfile.TemporaryDirectory(prefix="seqjax-cli-") as folder:
      files = {name: os.path.join(folder, name) for name in ("stdin", "stdout", "stderr")}
      with open(files["stdin"], "w" if text else "wb") as f:
        f.write(input or ("" if text else b""))
      request = {"kind": warm[0], "what": warm[1], "argv": list(args[2:]),
                 "cwd": os.path.abspath(cwd or os.getcwd()), "env": env, **files}
      server.stdin.write(json.dumps(request) + "\n")
      pid = json.loads(server.stdout.readline())["pid"]
      timer = threading.Timer(timeout or 0, os.kill, (pid, 9))
      if timeout:
        timer.start()
      code = json.loads(server.stdout.readline())["code"]
      timer.cancel()
      outputs = []
      for name in ("stdout", "stderr"):
        with open(files[name], "r" if text else "rb") as f:
          outputs.append(f.read())
  if timeout and code == -9:
    raise subprocess.TimeoutExpired(args, timeout, *outputs)
  result = subprocess.CompletedProcess(args, code, *outputs)
  if check:
    result.check_returncode()
  return result


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
  code = 0
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
    code = 1
  # The interpreter's exit, less its finalisation of every module the server imported
  # (a second a command): it waits for the threads that are not daemons, runs the atexit
  # handlers, and flushes the output.
  threading._shutdown()
  atexit._run_exitfuncs()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def _run_command(request):
  import runpy
  sys.path[0] = "" if request["kind"] == "code" else os.getcwd()
  if request["kind"] == "module":
    sys.argv = [request["what"], *request["argv"][1:]]  # runpy sets argv[0] to its file
    runpy.run_module(request["what"], run_name="__main__", alter_sys=True)
  else:
    sys.argv = ["-c", *request["argv"][1:]]
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    exec(compile(request["what"], "<string>", "exec"), main.__dict__)


def _serve():
  import gc
  import importlib
  import warnings
  # Python 3.12 warns on any fork of a process with a second thread; JAX's import
  # starts one, and no backend (whose threads a fork would break) is started here.
  warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
  for module in PRELOAD:
    importlib.import_module(module)
  gc.freeze()  # a child's collections then skip the imports' objects, as seqjax.main does
  reply = sys.stdout
  reply.write(json.dumps({"modules": sorted(sys.modules)}) + "\n")
  reply.flush()
  for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
      _child(request)  # never returns
    reply.write(json.dumps({"pid": pid}) + "\n")
    reply.flush()
    _, status = os.waitpid(pid, 0)
    reply.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
    reply.flush()


if __name__ == "__main__":
  _serve()
