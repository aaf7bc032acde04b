import sys

from seqmix_plot.cli import main

sys.exit(main())
