"""``python -m refinenet_tf.cli ...``: the ``refinenet-tf`` command."""

import sys

from refinenet_tf.cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
