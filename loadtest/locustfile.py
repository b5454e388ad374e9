"""The shop journey for Locust: `locust -f loadtest/locustfile.py` (or `make loadtest`).

Users browse, look at products, check out and look their orders up, in the weights of the mix
(`MIX`: `Shopper` for `journey`, `Buyer` for `checkout`; `loadtest.journey.MIXES`); the
scenario's shape (`SCENARIO`, `USERS`, `SPAWN_RATE`, `DURATION`; `loadtest.shapes`) decides how
many run when, and of which class. Each user takes an API key from
`LOADTEST_API_KEYS` (keys with the `loadtest` scope) and, unless `DYE=0`, marks every request
`X-Shadow-Traffic: 1`.

Every answer is judged by `loadtest.outcomes.classify` (ok, shed, business, error); only errors
are Locust failures. The outcomes and their latencies are tallied too, from Locust's own
request event so the tally and Locust's stats count the same requests (workers ship their tally
to the master with every stats report) and written to `$LOADTEST_OUTCOMES_FILE` when Locust
quits, for the runner's summary and SLO gate (`python -m loadtest.run`).

Runs as it is in master/worker mode: `--master` on one host, `--worker --master-host <it>` on
as many as needed; every process reads the same environment.
"""

from __future__ import annotations

import functools
import json
import os
import random
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.outcomes import ERROR, Tally, classify
from locust import FastHttpUser, LoadTestShape, TaskSet, User, between, events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest import journey, knobs, shapes

#: This process's tally (on the master: everything the workers reported, merged).
TALLY = Tally()
#: Wall-clock start and stop of the test, as this process saw them.
TIMES: dict[str, float] = {}
#: On the master: answers reported by each worker (shows that every worker took part).
PER_WORKER: dict[str, int] = {}


@functools.cache
def settings() -> knobs.Knobs:
    return knobs.parse()


def outcome_of(response: Any) -> tuple[int, str]:
    """(status, outcome) of a Locust response; status 0 when there was no answer."""
    status = int(getattr(response, "status_code", 0) or 0)
    headers = getattr(response, "headers", None)
    return status, classify(status, bool(headers and headers.get("retry-after")))


@events.request.add_listener
def tally(name: str, response_time: float, response: Any = None, **_: Any) -> None:
    """Count every request Locust counts, in the same event, so the two always agree."""
    TALLY.add(outcome_of(response)[1], response_time, name)


class Customer(FastHttpUser):
    """One customer: browses pages in order, looks at products, buys cheap ones, checks orders.

    Abstract: the classes below weight its tasks, one class per mix.
    """

    abstract = True
    wait_time = between(*journey.THINK_SECONDS)
    network_timeout = 10.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        chosen = settings()
        self.headers = journey.headers(random.choice(chosen.keys), chosen.dye)
        self.cursor: str | None = None
        self.skus: list[str] = list(journey.SKUS)
        self.orders: list[str] = []

    def _judge(self, response: Any) -> Any:
        """Tell Locust what the answer is: only an error is a failure. The 2xx answer, or None."""
        status, outcome = outcome_of(response)
        if outcome == ERROR:
            response.failure(
                f"{status} {str(response.text or '')[:120]}" if status else "no answer"
            )
            return None
        response.success()
        return response if 200 <= status < 300 else None

    def browse(self) -> None:
        path = f"/api/products?limit={journey.PAGE_SIZE}"
        if self.cursor:
            path += f"&cursor={self.cursor}"
        with self.client.get(
            path, name=journey.BROWSE, headers=self.headers, catch_response=True
        ) as response:
            ok = self._judge(response)
            if ok is None:
                return
            page = json.loads(ok.text)
            found = journey.affordable(page.get("items", []))
            self.skus = list(dict.fromkeys([*self.skus, *found]))
            self.cursor = page.get("next_cursor")  # the last page starts the list again

    def detail(self) -> None:
        sku = random.choice(self.skus)
        with self.client.get(
            f"/api/products/{sku}", name=journey.DETAIL, headers=self.headers, catch_response=True
        ) as response:
            self._judge(response)

    def checkout(self) -> None:
        sku = random.choice(self.skus)
        sent = {**self.headers, "Idempotency-Key": secrets.token_hex(16)}
        with self.client.post(
            "/api/orders",
            name=journey.CHECKOUT,
            json=journey.checkout_body(sku),
            headers=sent,
            catch_response=True,
        ) as response:
            ok = self._judge(response)
            if ok is not None:
                self.orders = [*self.orders[-19:], json.loads(ok.text)["id"]]

    def lookup(self) -> None:
        if not self.orders:
            return self.detail()  # nothing bought yet: look at a product instead
        order = random.choice(self.orders)
        with self.client.get(
            f"/api/orders/{order}", name=journey.LOOKUP, headers=self.headers, catch_response=True
        ) as response:
            self._judge(response)
        return None


def weighted(mix: str) -> list[TaskSet | Callable[..., Any]]:
    """`Customer`'s tasks in the weights of `mix`: each task as many times as its weight (what
    Locust makes of `@task(weight)`)."""
    weights = journey.MIXES[mix]
    tasks: dict[str, TaskSet | Callable[..., Any]] = {
        journey.BROWSE: Customer.browse,
        journey.DETAIL: Customer.detail,
        journey.CHECKOUT: Customer.checkout,
        journey.LOOKUP: Customer.lookup,
    }
    return [tasks[name] for name, weight in weights.items() for _ in range(weight)]


class Shopper(Customer):
    """`MIX=journey`: mostly looking, sometimes buying, now and then checking an order."""

    tasks = weighted("journey")


class Buyer(Customer):
    """`MIX=checkout`: mostly buying, to load the write path (orders, stock, charges)."""

    tasks = weighted("checkout")


USERS: dict[str, type[Customer]] = {"journey": Shopper, "checkout": Buyer}


class ScenarioShape(LoadTestShape):
    """The users over time of `SCENARIO` (see `loadtest.shapes`), all of the class of `MIX`."""

    def tick(self) -> tuple[int, float, list[type[User]] | None] | None:
        step = shapes.tick(settings().stages, self.get_run_time())
        if step is None:
            return None
        users, spawn_rate = step
        return users, spawn_rate, [USERS[settings().mix]]


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):

        def report(client_id: str, data: dict[str, Any]) -> None:
            data["loadtest_tally"] = TALLY.take()

        environment.events.report_to_master.add_listener(report)
        return
    if isinstance(runner, MasterRunner):

        def merge(client_id: str, data: dict[str, Any]) -> None:
            if "loadtest_tally" in data:
                TALLY.merge(data["loadtest_tally"])
                answers = sum(data["loadtest_tally"]["counts"].values())
                PER_WORKER[client_id] = PER_WORKER.get(client_id, 0) + answers

        environment.events.worker_report.add_listener(merge)

    def started(**_: Any) -> None:
        TIMES.setdefault("started", time.time())

    def stopped(**_: Any) -> None:
        TIMES["stopped"] = time.time()

    def write(**_: Any) -> None:
        # After the runner quit: the workers' final reports are merged by now.
        target = os.environ.get("LOADTEST_OUTCOMES_FILE")
        if target:
            Path(target).write_text(
                json.dumps({**TALLY.to_dict(), **TIMES, "per_worker": PER_WORKER}, indent=1)
            )

    environment.events.test_start.add_listener(started)
    environment.events.test_stop.add_listener(stopped)
    environment.events.quit.add_listener(write)
