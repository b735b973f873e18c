"""``python -m fieldstation.cli`` runs the command line."""

from fieldstation.cli.app import main

main()
