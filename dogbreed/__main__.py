"""``python -m dogbreed`` is ``python -m dogbreed.train``."""

from dogbreed.train import main

main()
