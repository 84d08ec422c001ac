"""``python -m train`` (and ``torchrun -m train``) runs the ``train`` command line."""

from train.cli import main

main()
