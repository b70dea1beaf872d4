"""fedseg ServerApp: reads the run config and runs the federation (see ``server.strategy``).

Every reply the server receives is described (field names, no values) in ``RUN/messages.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedseg.federation.audit import MESSAGES_FILE, AuditedGrid
from fedseg.federation.config import FederationConfig
from server.strategy import FederatedSegmentation

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = FederationConfig.from_run_config(context.run_config)
    FederatedSegmentation(AuditedGrid(grid, Path(config.out) / MESSAGES_FILE), config).run()  # type: ignore[arg-type]
