"""`python -m cldyn_cli` runs the CLI."""

from cldyn_cli.cli import main

main()
