"""python -m stackcam.cli"""

import sys

from stackcam.cli import main

sys.exit(main())
