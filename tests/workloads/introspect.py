"""A workload that tells what the process running it has loaded, for the layering tests."""

from __future__ import annotations

import json
import os
import sys

from avalon_worker.workload import Workload


class LoadedModulesWorkload(Workload):
    """Answers {"pid": the process's id, "modules": the names in sys.modules}."""

    def run(self, inputs):
        return json.dumps({"pid": os.getpid(), "modules": sorted(sys.modules)}).encode()
