"""``python -m inferstream``: the same as the ``inferstream`` command."""

from inferstream.cli import main

main()
