"""Test-wide setup: one compilation cache for the whole run, outside the user's home.

Subprocesses (`python -m seqjax.main`) find it through XDG_CACHE_HOME; this
process uses it too, so the many tests that compile the same quick configs
load the programs compiled by the first.
"""

import atexit
import os
import shutil
import tempfile

from seqjax.runtime import compile_cache

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="seqjax-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)
compile_cache.enable(compile_cache.default_dir())
