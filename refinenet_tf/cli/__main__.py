"""``python -m refinenet_tf.cli ...``: the ``refinenet-tf`` command."""

import sys

from refinenet_tf.cli.commands import main

sys.exit(main())
