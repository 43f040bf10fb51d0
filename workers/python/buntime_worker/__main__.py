"""Entry point: ``python3 -m buntime_worker SCRIPT [ARGS...]``.

Also works as ``python3 /opt/buntime/python/buntime_worker SCRIPT ...``
(no PYTHONPATH needed): python then puts this package's directory first on
sys.path, which is swapped for its parent so that ``buntime_worker`` and
``buntime`` import.
"""

import os
import sys

if not __package__:
    _here = os.path.dirname(os.path.abspath(__file__))
    _parent = os.path.dirname(_here)
    if sys.path and os.path.abspath(sys.path[0] or ".") == _here:
        del sys.path[0]
    if _parent not in sys.path:
        sys.path.insert(0, _parent)
    from buntime_worker.runner import main
    main(replace_path0=False)
else:
    from .runner import main
    main()
