"""`python -m lora_ft ...` (and `accelerate launch -m lora_ft train ...`)."""

import sys

from .cli import main

sys.exit(main())
