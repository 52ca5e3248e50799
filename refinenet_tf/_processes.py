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


def print_measurement(argv, measurements):
    """The other side of :func:`in_fresh_process`: ``argv`` is ``[FUNCTION, JSON_ARGUMENTS]``; prints
    ``measurements[FUNCTION](*arguments)`` as JSON, its last line. ``measurements`` maps names to functions."""
    function, arguments = argv
    if function not in measurements:
        raise SystemExit(f"unknown measurement {function!r}; use one of {sorted(measurements)}")
    print(json.dumps(measurements[function](*json.loads(arguments))))


def run_script(main, measurements):
    """The entry of a script that measures in fresh processes: ``SCRIPT FUNCTION JSON_ARGUMENTS`` with a name
    of ``measurements`` (as :func:`in_fresh_process` runs it) prints that measurement; anything else exits with
    ``main()``'s status."""
    if len(sys.argv) == 3 and sys.argv[1] in measurements:
        print_measurement(sys.argv[1:], measurements)
    else:
        sys.exit(main())
