"""Offline, deterministic tools of the support example (an in-memory order database)."""

from __future__ import annotations

from typing import Literal

ORDERS = {
    "O-5531": {
        "customer": "Mira Okafor",
        "email": "mira.okafor@example.com",
        "status": "delivered",
        "delivered_on": "2025-03-10",
        "return_window_ends": "2025-04-09",
        "payment": "card ending 4242",
        "items": [
            {"sku": "KET-1700-STEEL", "name": "Electric kettle 1.7 l, steel", "price": 39.90},
            {"sku": "MUG-CER-4", "name": "Ceramic mugs, set of 4", "price": 24.00},
        ],
    },
    "O-5540": {
        "customer": "Jonas Berg",
        "email": "jonas.berg@example.com",
        "status": "shipped",
        "delivered_on": None,
        "return_window_ends": None,
        "payment": "PayPal",
        "items": [{"sku": "PAN-28-CAST", "name": "Cast-iron pan 28 cm", "price": 54.50}],
    },
}

# Items that can be sent as a replacement, with stock on hand.
STOCK = {"KET-1700-STEEL": 14, "KET-1700-WHITE": 3, "MUG-CER-4": 40, "PAN-28-CAST": 0}


def _order(order_id: str) -> dict:
    try:
        return ORDERS[order_id]
    except KeyError:
        raise LookupError(f"no order {order_id!r}") from None


def lookup_order(order_id: str) -> dict:
    """Load an order: customer, status, payment, items with prices, and the return window.

    Args:
        order_id: The order's id, e.g. "O-5531".
    """
    order = _order(order_id)
    return {
        "order_id": order_id,
        **order,
        "total": round(sum(i["price"] for i in order["items"]), 2),
    }


def refund(order_id: str, amount: float, reason: str) -> str:
    """Refund part or all of an order to the original payment method.

    Args:
        order_id: The order to refund.
        amount: The amount in EUR; at most the order's total.
        reason: Why, in a few words (stored with the refund).
    """
    order = _order(order_id)
    total = sum(i["price"] for i in order["items"])
    if not 0 < amount <= total:
        raise ValueError(f"amount {amount:.2f} is not between 0 and the order total {total:.2f}")
    return f"Refund RF-{order_id[2:]} of {amount:.2f} EUR to {order['payment']} ({reason})."


def exchange(order_id: str, sku: str, replacement_sku: str) -> str:
    """Send a replacement for one item of an order; the customer returns the old one for free.

    Args:
        order_id: The order the item belongs to.
        sku: The SKU of the item being exchanged.
        replacement_sku: The SKU to send instead (may equal `sku` for a like-for-like swap).
    """
    order = _order(order_id)
    if sku not in {i["sku"] for i in order["items"]}:
        raise ValueError(f"order {order_id} has no item {sku}")
    if STOCK.get(replacement_sku, 0) < 1:
        raise ValueError(f"{replacement_sku} is out of stock")
    return (
        f"Exchange EX-{order_id[2:]}: {replacement_sku} ships today; return label for {sku} "
        f"sent to {order['email']}."
    )


def send_reply(ticket_id: str, message: str) -> str:
    """Send the customer a message on the ticket.

    Args:
        ticket_id: The support ticket, e.g. "T-8812".
        message: The text the customer reads.
    """
    return f"Reply sent on {ticket_id} ({len(message)} characters)."


def log_interaction(
    ticket_id: str,
    order_id: str,
    outcome: Literal["refund", "exchange", "information", "escalated"],
    summary: str,
) -> str:
    """Record the conversation in the CRM.

    Args:
        ticket_id: The support ticket.
        order_id: The order the conversation was about.
        outcome: What was done.
        summary: One or two sentences for the next agent who reads the customer's history.
    """
    return f"CRM entry for {ticket_id} ({order_id}, {outcome}) saved."


def close_ticket(ticket_id: str, resolution: str) -> str:
    """Close the support ticket.

    Args:
        ticket_id: The ticket to close.
        resolution: A short resolution note.
    """
    return f"Ticket {ticket_id} closed: {resolution}"
