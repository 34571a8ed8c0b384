import sys

from silkie.train import main

sys.exit(main())
