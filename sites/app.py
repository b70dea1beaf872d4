"""fedseg ClientApp: a thin Flower layer over ``fedseg.federation.site_runtime.SiteRuntime``.

Each message is answered by the site's runtime: ``query.describe`` (who am I), ``train`` (one
round of local training, the update protected as ``fedseg.crypto.protection`` says),
``query.unmask`` (this round's mask seeds with sites that dropped out) and ``evaluate`` (sums
and counts of the global model's scores on the site's own images). Images, masks, the teacher
model, the privacy accountant, the node key and the secret HE key never leave the site; with
``he = true`` neither do plaintext weights.
"""

from __future__ import annotations

import logging

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedseg.federation import protocol
from fedseg.federation.config import FederationConfig
from fedseg.federation.identity import site_identity
from fedseg.federation.site_runtime import SiteRuntime
from fedseg.privacy import PrivacyBudgetExhausted
from fedseg.runtime import status as runtime_status
from sites.records import model_from, seeds_records, ticket_from, update_records

app = ClientApp()
logging.getLogger("fedseg").setLevel(logging.INFO)
logging.getLogger("fedseg").info("fedseg runtime: %s", runtime_status().describe())


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
        protection=identity.protection(),
    )


def _numbers(values: dict) -> MetricRecord:
    return MetricRecord({k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})


@app.query(protocol.DESCRIBE)
def describe(message: Message, context: Context) -> Message:
    return Message(RecordDict({protocol.SITE: ConfigRecord(runtime_for(context).describe())}), reply_to=message)


def _refusal(site: ConfigRecord, refused: PrivacyBudgetExhausted) -> RecordDict:
    spent = {
        "epsilon": refused.spent,
        "delta": refused.delta,
        "epsilon_budget": refused.budget,
        "projected_epsilon": refused.projected,
    }
    return RecordDict(
        {
            protocol.SITE: site,
            protocol.REFUSED: ConfigRecord({"reason": str(refused)}),
            protocol.METRICS: _numbers(spent),
        }
    )


@app.train()
def train(message: Message, context: Context) -> Message:
    runtime = runtime_for(context)
    server_round = int(message.content[protocol.CONFIG]["server-round"])
    site = ConfigRecord({"site": runtime.spec.name, "centre": runtime.spec.centre})
    try:
        reply = runtime.train(server_round, model_from(message.content), ticket_from(message.content))
    except PrivacyBudgetExhausted as refused:
        return Message(_refusal(site, refused), reply_to=message)
    metrics = _numbers({**reply.metrics, protocol.NUM_EXAMPLES: reply.num_examples})
    return Message(
        RecordDict({protocol.SITE: site, protocol.METRICS: metrics, **update_records(reply.update)}), reply_to=message
    )


@app.query(protocol.UNMASK)
def unmask(message: Message, context: Context) -> Message:
    runtime = runtime_for(context)
    request = message.content[protocol.CONFIG]
    dropped = tuple(s for s in str(request["dropped"]).split(",") if s)
    min_sites = runtime.config.min_train_sites  # the site's own run config, not the request, sets the floor
    revealed = runtime.protection.reveal(ticket_from(message.content), dropped, min_sites=min_sites)
    return Message(RecordDict(seeds_records(revealed)), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    runtime = runtime_for(context)
    result = runtime.evaluate(model_from(message.content))
    site = ConfigRecord({"site": result["site"], "centre": result["centre"], "role": result["role"]})
    return Message(RecordDict({protocol.SITE: site, protocol.COUNTS: _numbers(result["counts"])}), reply_to=message)
