"""What is particular to the MongoDB store's set-up (the contract is tested in conformance/)."""

from __future__ import annotations

import subprocess
import sys


def test_without_pymongo_the_store_imports_and_its_error_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['pymongo'] = None\n"
        "import fluxo\n"
        "import fluxo.stores.mongo\n"
        "try:\n"
        "    fluxo.open_store('mongodb://127.0.0.1:1/db')\n"
        "except fluxo.DefinitionError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert "pip install 'fluxo[mongo]'" in result.stdout
