"""``python -m workflow`` runs the command line, ``idcard-workflow``."""

from workflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
