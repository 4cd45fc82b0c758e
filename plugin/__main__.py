"""python -m tritonmix: the same as the tritonmix command."""
import sys

from tritonmix.cli import main

sys.exit(main())
