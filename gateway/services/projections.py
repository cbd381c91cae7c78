"""The projector's pass: every tenant whose last admin change Redis missed is projected again
from DynamoDB (``BillingService.repair_projections``, one batch of marks at a time), and
whatever is still marked afterwards is counted (Redis away, or a change under way).

Run by ``maas projections repair --loop`` on the local stack and by ProjectorFunction in AWS."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.services.billing import BillingService

BATCH = 100  # marks per repair call


@dataclass(frozen=True, slots=True)
class RepairRun:
    repaired: int  # tenants projected again, their marks cleared
    pending: int  # marks left (at most BATCH counted): Redis still away, or a change under way


def repair_all(billing: BillingService) -> RepairRun:
    repaired = 0
    while True:
        done = billing.repair_projections(limit=BATCH)
        repaired += done
        if done < BATCH:
            return RepairRun(repaired=repaired, pending=len(billing.stores.outbox.pending(BATCH)))
