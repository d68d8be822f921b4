"""A worker that processes a few jobs, then fails, so gaffer has something to restart."""

import argparse
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--jobs", type=int, default=5)
options = parser.parse_args()
name = f"{os.environ.get('GAFFER_TEMPLATE')}.{os.environ.get('GAFFER_INSTANCE')}"
for job in range(1, options.jobs + 1):
    print(f"{name} processed job {job}/{options.jobs}")
    time.sleep(1.5)
print(f"{name} ran out of jobs, exiting with status 1", file=sys.stderr)
sys.exit(1)
