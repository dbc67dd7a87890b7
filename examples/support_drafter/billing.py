"""The one tool the model may ask for, and the sandbox that decides whether it runs.

``lookup_last_invoice`` needs the ``billing`` permission: the executor checks the
*agent's* roles, so a tier-1 agent's draft gets ``{"error": "permission_denied"}`` back,
never the invoice, whatever the model asked. The tool is offered to every agent on
purpose (the executor, not the tool list, is the control), and it only answers for the
customer of the ticket being drafted.
"""

from __future__ import annotations

import copy
from typing import Any

from bastion.safety.tools import (
    ToolContext,
    ToolError,
    ToolExecutor,
    ToolRegistry,
    anthropic_tool_definitions,
)
from bastion.state import CounterStore

from .seed import Ticket

TOOL = "lookup_last_invoice"
PERMISSION = "billing"
PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer_id": {
            "type": "string",
            "pattern": "^cus_[0-9]+$",
            "description": "the ticket's customer id, like cus_1001",
        }
    },
    "required": ["customer_id"],
    "additionalProperties": False,
}


class Billing:
    """Invoices by customer (the shipped JSON stands in for the billing system)."""

    def __init__(self, invoices: dict[str, dict[str, Any]], tickets: dict[str, Ticket]) -> None:
        self._invoices = invoices
        self._tickets = tickets
        self.registry = ToolRegistry()
        self.registry.register(
            self.lookup_last_invoice,
            name=TOOL,
            parameters=PARAMETERS,
            permission=PERMISSION,
            timeout=2.0,
            description="The customer's most recent invoice: number, date, amount, status.",
        )

    async def lookup_last_invoice(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        """Answers only for the customer of the ticket being drafted (the conversation)."""
        ticket = self._tickets.get(ctx.conversation_id or "")
        if ticket is None or ticket.customer_id != args["customer_id"]:
            raise ToolError("customer_id is not the customer of this ticket")
        invoice = self._invoices.get(ticket.customer_id)
        if invoice is None:
            return {"customer_id": ticket.customer_id, "invoice": None}
        return {"customer_id": ticket.customer_id, **invoice}

    def executor(self, state: CounterStore) -> ToolExecutor:
        return ToolExecutor(self.registry, state, max_calls=4)

    def definitions(self, ticket: Ticket) -> list[dict[str, Any]]:
        """The tools offered for one ticket: the customer id narrowed to that ticket's customer."""
        defs = anthropic_tool_definitions(self.registry)
        out = []
        for d in defs:
            d = copy.deepcopy(d)
            if d["name"] == TOOL:
                d["input_schema"]["properties"]["customer_id"]["enum"] = [ticket.customer_id]
            out.append(d)
        return out

    @staticmethod
    def offered_for(ticket: Ticket) -> bool:
        """Billing tickets get the tool; nothing else needs it."""
        return ticket.category == "billing"
