"""The layers of ARCHITECTURE.md import downwards only: data never pulls in models or serving."""

from __future__ import annotations

import subprocess
import sys


def test_data_layer_imports_no_upper_layer():
    code = (
        "import sys, funnelrec.data.schema, funnelrec.data.encoding, funnelrec.data.synthetic, "
        "funnelrec.data.loaders.retailrocket, funnelrec.data.processors.session_builder, "
        "funnelrec.data.processors.splitter, funnelrec.data.features.user_features, "
        "funnelrec.data.features.item_features\n"
        "upper = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['funnelrec', 'models'], ['funnelrec', 'serving'], ['funnelrec', 'evaluation']))\n"
        "print(','.join(upper))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
