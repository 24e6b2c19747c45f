"""``python -m motorpool``: the CLI."""

from motorpool.cli import main

main()
