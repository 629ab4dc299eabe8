#!/usr/bin/env python3
"""Runs the Ansible/Salt integration tests: python3 tests/integrations/run.py [pytest args].

Same as `python3 -m pytest tests/integrations -q`. Binaries from TETHER_BIN /
TETHER_RECEIVER_BIN (default target/debug/... of the repository); the tools
from tests/integrations/requirements.txt must be installed.
"""
import os
import sys

import pytest

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(pytest.main([here, "-q"] + sys.argv[1:]))
