"""Runbook: a caller's circuit breaker to a service opened. Run by the recovery agent.

Edit it freely: it is plain Python, read again each time the agent starts (`make up`), and
`RECOVERY_RUNBOOK=<file>` points the agent at another one. `run` gets the actions of one
recovery (infra/local/recovery_ops.py, `Operations`); each logs, counts and records itself:

    ops.name                    the failing service ("payment")
    ops.callers                 the services whose breaker to it opened
    ops.notify(event, detail)   POST a notice to the user's webhooks (breaker notice format)
    ops.canary_in_progress()    a `make canary` route of the service exists
    ops.restart()               restart the instance taking the calls; True once it is ready
    ops.breaker_closes()        True once every caller's breaker closed by itself; False when
                                a probe fails again or RECOVERY_VERIFY_SECONDS pass
    ops.switch_to_standby()     start a standby (same code, the service's base configuration:
                                no <P>_FAULT_* settings) and route every caller to it

What it returns is the recovery's outcome (report, `recovery_runs_total{outcome}`).
The Kubernetes version of the same steps: runbooks/README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recovery_ops import Operations


async def run(ops: Operations) -> str:
    callers = ", ".join(sorted(ops.callers))
    ops.notify("recovery_started", f"breaker {callers} -> {ops.name} open; runbook started")

    # A canary release judges its own instance and rolls it back: not two automatons at once.
    if await ops.canary_in_progress():
        ops.notify("recovery_skipped", f"a canary of {ops.name} is under way; it decides")
        return "skipped_canary"

    # 1. Restart the failing instance: a runtime fault, a leak or a wedged pool goes with it.
    if await ops.restart():
        ops.notify("recovery_restarted", f"{ops.name} restarted and ready; waiting for breakers")
        if await ops.breaker_closes():
            ops.notify("recovery_succeeded", f"{ops.name} recovered by a restart", recovered=True)
            return "recovered_by_restart"

    # 2. Still failing (bad configuration, a poisoned host): a standby from the base config.
    ops.notify("recovery_escalated", f"{ops.name} still fails after a restart; starting a standby")
    if await ops.switch_to_standby():
        ops.notify("recovery_standby", f"every caller of {ops.name} now goes to the standby")
        if await ops.breaker_closes():
            ops.notify("recovery_succeeded", f"{ops.name} recovered on a standby", recovered=True)
            return "recovered_by_standby"

    # 3. Nothing worked: a human decides. The breakers keep failing calls fast meanwhile.
    ops.notify("recovery_failed", f"{ops.name} did not recover; a human is needed")
    return "failed"
