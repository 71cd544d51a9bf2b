"""`python -m tuneforge` is the same as the `tuneforge` command."""

from tuneforge.cli import main

main()
