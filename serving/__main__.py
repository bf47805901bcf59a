"""``python -m serving``: run the LLM model server (see ``serving.runtime.server``)."""

import logging
import os
import sys

from serving.runtime.server import main

if __name__ == "__main__":
    main()
    # The server has drained and stopped (logged "model server stopped"): skip the interpreter's teardown
    # of torch and its thread pools, which took ~1.6 s of a 1.7 s SIGTERM-to-exit here and holds up every
    # revision switch and `llmops down`. Flush what was written first.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
