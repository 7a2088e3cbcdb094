"""Convert a teacher checkpoint into the plain safetensors state_dict that training loads.

    python tools/convert_teacher.py SRC DST.safetensors [--model REGISTRY_NAME] [--input-size N] [--trust-pickle]

See ``radio.models.convert`` for the supported layouts (also available as ``radio convert``).
"""

import sys

from radio.models.convert import main

if __name__ == "__main__":
    sys.exit(main())
