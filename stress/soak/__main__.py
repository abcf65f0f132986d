"""``python -m stress.soak``: one soak iteration (internal; the soak starts it)."""
import sys

from stress.soak.child import iteration_main

sys.exit(iteration_main())
