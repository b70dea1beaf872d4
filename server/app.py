"""fedseg ServerApp: reads the run config and runs the federation (see ``server.strategy``)."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedseg.federation.config import FederationConfig
from server.strategy import FederatedSegmentation

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    FederatedSegmentation(grid, FederationConfig.from_run_config(context.run_config)).run()
