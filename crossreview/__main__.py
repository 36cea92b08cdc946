"""`python -m crossreview` is the `crossreview` command."""

from .cli import main

main()
