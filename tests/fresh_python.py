"""Scripts run in a fresh Python interpreter that stays up for several of them.

Each script runs in a namespace of its own (a name defined by an earlier script is not there) and, if asked, in a
folder of its own; what it prints is captured, and a failure is answered with its traceback while the next script
still runs. Python and TensorFlow start once per interpreter rather than once per script (seconds each).
"""

import json
import subprocess
import sys
import tempfile

_SERVER = """
import contextlib, io, json, os, sys, traceback
for line in sys.stdin:
    request = json.loads(line)
    if request["cwd"]:
        os.chdir(request["cwd"])
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(request["script"], request["name"], "exec"), {"__name__": "__main__"})
        error = None
    except BaseException:
        error = traceback.format_exc()
    sys.__stdout__.write(json.dumps({"output": printed.getvalue(), "error": error}) + "\\n")
    sys.__stdout__.flush()
"""


class FreshInterpreter:
    """A fresh interpreter (environment ``env``) that runs the scripts given to :meth:`run`, one after another."""

    def __init__(self, env=None):
        self._stderr = tempfile.TemporaryFile("w+")
        self._process = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)

    def run(self, script, cwd=None, name="<script>"):
        """Runs ``script`` (in folder ``cwd`` if given); returns ``{"output": what it printed, "error": its
        traceback or None}``. If the interpreter has ended, ``error`` says so with the end of its stderr."""
        request = json.dumps({"script": script, "cwd": None if cwd is None else str(cwd), "name": name})
        try:
            self._process.stdin.write(request + "\n")
            self._process.stdin.flush()
            reply = self._process.stdout.readline()
        except BrokenPipeError:
            reply = ""
        if reply:
            return json.loads(reply)
        self._stderr.seek(0)
        return {"output": "", "error": f"the interpreter ended (exit code {self._process.wait(timeout=60)}):\n"
                                       f"{self._stderr.read()[-3000:]}"}

    def close(self):
        """Ends the interpreter once its last script is done."""
        try:
            self._process.stdin.close()
        except BrokenPipeError:
            pass
        self._process.wait(timeout=300)
        self._stderr.close()
