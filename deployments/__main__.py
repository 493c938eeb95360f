import argparse
import logging

from clipping.settings import get_settings
from deployments import __doc__ as usage
from deployments.apply import apply

if __name__ == "__main__":
    argparse.ArgumentParser(
        prog="python -m deployments",
        description=usage,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    apply(get_settings())
