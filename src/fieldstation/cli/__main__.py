"""``python -m fieldstation.cli`` runs the command line."""

from fieldstation.cli.main import main

main()
