"""fedseg ClientApp: a thin Flower layer over ``fedseg.federation.site_runtime.SiteRuntime``.

Each message is answered by the site's runtime: ``query.describe`` (who am I), ``train`` (one
round of local training) and ``evaluate`` (sums and counts of the global model's scores on the
site's own images). Images, masks, the teacher model, the privacy accountant and the secret HE
key never leave the site; with ``he = true`` neither do plaintext weights. Every field a reply
carries is listed, with its protection, in ``fedseg.privacy.release`` (docs/privacy.md).
"""

from __future__ import annotations

import logging

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedseg.federation import protocol
from fedseg.federation.config import FederationConfig
from fedseg.federation.identity import site_identity
from fedseg.federation.site_runtime import SiteRuntime
from fedseg.privacy import LedgerRow, PrivacyBudgetExhausted
from sites.records import model_from, model_records

app = ClientApp()
logging.getLogger("fedseg").setLevel(logging.INFO)


def runtime_for(context: Context) -> SiteRuntime:
    config = FederationConfig.from_run_config(context.run_config)
    identity = site_identity(context.node_config, config)
    return SiteRuntime(
        identity.spec,
        config,
        data_root=identity.data_root,
        state_dir=identity.state_dir,
        device=identity.device,
        he=identity.load_he(),
        max_evaluations=identity.max_evaluations,
    )


def _numbers(values: dict) -> MetricRecord:
    return MetricRecord({k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})


@app.query(protocol.DESCRIBE)
def describe(message: Message, context: Context) -> Message:
    return Message(RecordDict({protocol.SITE: ConfigRecord(runtime_for(context).describe())}), reply_to=message)


def _ledger(row: LedgerRow | dict | None) -> dict[str, ConfigRecord]:
    """The ledger row of what this reply releases (under DP), as its own record."""
    if row is None:
        return {}
    values = row.to_json() if isinstance(row, LedgerRow) else row
    return {protocol.LEDGER: ConfigRecord({k: v for k, v in values.items() if k != "budget_left"})}


@app.train()
def train(message: Message, context: Context) -> Message:
    runtime = runtime_for(context)
    server_round = int(message.content[protocol.CONFIG]["server-round"])
    site = ConfigRecord({"site": runtime.spec.name, "centre": runtime.spec.centre})
    try:
        reply = runtime.train(server_round, model_from(message.content))
    except PrivacyBudgetExhausted as refused:
        content = {protocol.SITE: site, protocol.REFUSED: ConfigRecord({"reason": str(refused)})}
        return Message(RecordDict({**content, **_ledger(runtime.refusal_row(server_round))}), reply_to=message)
    update = reply.encrypted if reply.encrypted is not None else reply.weights
    metrics = _numbers({**reply.metrics, protocol.NUM_EXAMPLES: reply.num_examples})
    content = {protocol.SITE: site, protocol.METRICS: metrics, **model_records(update), **_ledger(reply.ledger)}
    return Message(RecordDict(content), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    runtime = runtime_for(context)
    server_round = int(message.content[protocol.CONFIG]["server-round"])
    result = runtime.evaluate(model_from(message.content), server_round=server_round)
    site = ConfigRecord({"site": result["site"], "centre": result["centre"], "role": result["role"]})
    content = {protocol.SITE: site, protocol.COUNTS: _numbers(result["counts"]), **_ledger(result["ledger"])}
    return Message(RecordDict(content), reply_to=message)
