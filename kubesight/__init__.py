"""The top layer: the ``kubesight`` command (``kubesight.cli``), which registers every subcommand."""
