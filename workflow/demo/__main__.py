"""``python -m workflow.demo``: the command line's ``demo`` command (`workflow.cli`)."""

from workflow.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
