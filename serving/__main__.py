"""``python -m serving``: run the LLM model server (see ``serving.runtime.server``)."""

from serving.runtime.server import main

if __name__ == "__main__":
    main()
