"""Running one measurement in a Python process of its own (its own peak memory, no state of this one)."""

import json
import os
import subprocess
import sys


def in_fresh_process(module, function, *arguments, cwd=None):
    """Runs ``<module>.<function>(*arguments)`` as ``python -m MODULE FUNCTION JSON_ARGUMENTS`` in ``cwd`` (the
    module's ``__main__`` prints the JSON result as its last line) and returns that result."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", module, function, json.dumps(arguments)], capture_output=True,
                            text=True, env=environment, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"{module}.{function}{tuple(arguments)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
