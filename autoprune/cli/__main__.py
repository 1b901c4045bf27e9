"""``python -m autoprune.cli``: the same as the ``autoprune`` command."""

from autoprune.cli import run

run()
