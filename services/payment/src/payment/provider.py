"""The payment provider, simulated, and the one place that decides whether a charge is sent.

A live charge is *sent*: the simulated provider applies its rule (a charge above
`decline_above_cents` is declined) as a real provider would answer. A charge of dyed
(load-test) traffic is never sent: `decide` answers it locally with the same rule, so a load
test sees realistic declines, and the charge is recorded in the shadow `charge` table, its
`traffic` column saying `shadow` (servicekit.data.shadow). Nothing else in the service asks
a provider anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from servicekit import context

logger = logging.getLogger("payment.provider")

SUCCEEDED, DECLINED = "succeeded", "declined"


def is_declined(amount_cents: int, decline_above_cents: int) -> bool:
    """The decline rule: strictly above the threshold is declined."""
    return amount_cents > decline_above_cents


@dataclass(frozen=True, slots=True)
class Decision:
    """The provider's answer: the charge's status, and whether it was sent to the provider."""

    status: str
    sent: bool


@dataclass(frozen=True, slots=True)
class SimulatedProvider:
    """The simulated provider: declines above `decline_above_cents`, approves the rest."""

    decline_above_cents: int

    def send(self, amount_cents: int) -> str:
        """Send a charge to the provider (simulated): its answer, `succeeded` or `declined`."""
        return DECLINED if is_declined(amount_cents, self.decline_above_cents) else SUCCEEDED

    def decide(self, amount_cents: int) -> Decision:
        """Send a live charge; answer a dyed one locally, never sending it."""
        if context.get(context.SHADOW):
            status = DECLINED if is_declined(amount_cents, self.decline_above_cents) else SUCCEEDED
            return Decision(status, sent=False)
        return Decision(self.send(amount_cents), sent=True)
