"""``python -m convlstm_conformance``: the same as the ``convlstm-conformance`` command."""
import sys

from convlstm_conformance.cli import main

sys.exit(main())
