"""``python -m smtpcore``: the same as the ``smtpcore`` command.

The command line lives in ``adapters.cli`` because it opens sockets; the core
package itself never imports it (only running this file as a script does).
"""

import sys

from adapters.cli import main

sys.exit(main())
