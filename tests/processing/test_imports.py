"""Plugin modules are imported whenever a station file is validated: they must stay cheap."""

from __future__ import annotations

import subprocess
import sys


def test_plugin_modules_import_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "import fieldstation.processing.energy, fieldstation.processing.birdnet\n"
        "import fieldstation.processing.batdetect2, fieldstation.processing.worker\n"
        "from fieldstation.config import default_config\n"
        "default_config()\n"
        "heavy = ('numpy', 'scipy', 'soundfile', 'torch', 'ai_edge_litert', 'batdetect2')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
