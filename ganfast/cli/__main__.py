"""`python -m ganfast.cli ...` runs the `ganfast` command."""
import sys

from ganfast.cli import main

sys.exit(main())
