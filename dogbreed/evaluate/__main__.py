"""``python -m dogbreed.evaluate ckpt=PATH [data=…] [split=test]`` (see ``dogbreed.evaluate.cli``)."""

from dogbreed.evaluate.cli import main

main()
