"""What the agent CLIs' hooks run: `PYTHON -I -S .../git_fleet/agent_hook_run.py CLI ROLE`
(agent_settings.py writes the command, agent_hook.py does the work). A script, so that the
command stays short where a CLI shows it to the model, and Python starts without its site
(-S): the package's directory is put on the path here instead."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from git_fleet.agent_hook import main  # noqa: E402 (once the package can be found)

sys.exit(main())
