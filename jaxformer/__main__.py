import sys

from jaxformer.cli import run

sys.exit(run())
