"""``status``/``query``: what became of a transaction, answered from the spool.

``params`` = ``{transaction_id}`` → ``{transaction_id, status, results?}``, where status
is ``unknown`` (never seen), ``running`` (accepted or running), ``success`` or
``failure`` (with the stored ``results``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from podium.agent.actions import AgentState, ImmediateAction
from podium.errors import ProtocolError
from podium.protocol.names import validate_transaction_id


class StatusQuery(ImmediateAction):
    module = "status"
    action = "query"

    async def answer(self, agent: AgentState, params: dict[str, Any]) -> dict[str, Any]:
        extra = params.keys() - {"transaction_id"}
        if extra:
            raise ProtocolError(f"status/query: unknown param(s) {', '.join(sorted(extra))}")
        txid = validate_transaction_id(params.get("transaction_id"))
        results: dict[str, Any] = {"transaction_id": txid}
        if agent.accepting(txid):
            return {**results, "status": "running"}
        record = await asyncio.to_thread(agent.spool.get, txid)
        if record is None:
            return {**results, "status": "unknown"}
        if record.results is not None:
            results["results"] = record.results
        results["status"] = "running" if record.status == "accepted" else record.status
        return results
