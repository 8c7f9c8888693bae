"""The step graph: `needs` edges, an execution order that keeps file order where it can, and cycles."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from custodes.playbooks.schema import GotoStep, Step


def handler_ids(steps: Sequence[Step]) -> set[str]:
    """Steps named by some `on_error: {goto: ...}`: they run only when a failure routes to them."""
    return {step.on_error.goto for step in steps if isinstance(step.on_error, GotoStep)}


def execution_order(steps: Sequence[Step]) -> list[Step]:
    """Steps in the order they run: every step after its needs, otherwise in file order.

    Raises ValueError naming a cycle; unknown needs are ignored here (the loader reports them).
    """
    index = {step.id: position for position, step in enumerate(steps)}
    waiting = {step.id: {need for need in step.needs if need in index} for step in steps}
    dependants: dict[str, list[str]] = {step.id: [] for step in steps}
    for step in steps:
        for need in waiting[step.id]:
            dependants[need].append(step.id)
    ready = [index[sid] for sid, needs in waiting.items() if not needs]
    heapq.heapify(ready)
    order: list[Step] = []
    while ready:
        step = steps[heapq.heappop(ready)]
        order.append(step)
        for dependant in dependants[step.id]:
            waiting[dependant].discard(step.id)
            if not waiting[dependant]:
                heapq.heappush(ready, index[dependant])
    if len(order) < len(steps):
        raise ValueError(f"steps {' -> '.join(find_cycle(steps))} form a cycle")
    return order


def find_cycle(steps: Sequence[Step]) -> list[str]:
    """One cycle among the `needs` edges, as step ids with the first repeated at the end; [] if none."""
    needs = {step.id: [n for n in step.needs] for step in steps}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in needs.get(node, []):
            if nxt not in needs:
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for step in steps:
        if step.id not in state and (cycle := visit(step.id)):
            return list(reversed(cycle))
    return []
