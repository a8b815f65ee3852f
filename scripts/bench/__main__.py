from . import core
from .harness import main

raise SystemExit(main(core.run, core.__doc__, transport_flags=True))
