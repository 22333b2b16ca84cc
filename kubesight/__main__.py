import sys

from kubesight.cli import main

sys.exit(main())
