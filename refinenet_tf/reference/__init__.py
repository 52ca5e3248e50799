"""Reference implementations of other codebases' networks, for comparison (not imported by the package itself).

:mod:`refinenet_tf.reference.torch_official`: PyTorch implementations of the official RefineNet / Light-Weight
RefineNet structures (needs ``torch``): the tests' oracle for the converted checkpoints, and the peer that
``refinenet-tf benchmark --peer`` times.
"""
