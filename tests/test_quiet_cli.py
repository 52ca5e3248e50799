"""A command prints the package's own lines only: TensorFlow's start-up lines stay hidden unless ``--verbose``."""

import os
import subprocess
import sys

_TENSORFLOW_LINES = ("All log messages before absl::InitializeLog()", "Could not find cuda drivers",
                     "oneDNN custom operations are on", "cuInit", "cpu_feature_guard")


def _run(voc_tiny_dir, *flags):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "refinenet_tf.cli", "check-data", f"voc:{voc_tiny_dir}",
                           *flags], capture_output=True, text=True, env=env, timeout=600)


def test_a_command_prints_only_its_own_lines_unless_verbose(voc_tiny_dir):
    quiet = _run(voc_tiny_dir)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.startswith(f"voc:{voc_tiny_dir} (train): ") and " examples, 0 problem(s)" in quiet.stdout
    assert quiet.stderr == ""
    verbose = _run(voc_tiny_dir, "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert any(line in verbose.stderr for line in _TENSORFLOW_LINES), verbose.stderr
