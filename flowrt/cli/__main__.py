"""`python -m flowrt.cli`: the same as the `flowrt` command."""

from . import main

main()
