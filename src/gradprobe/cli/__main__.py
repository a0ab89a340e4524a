"""``python -m gradprobe.cli`` runs the console script."""

from gradprobe.cli.main import main

main()
