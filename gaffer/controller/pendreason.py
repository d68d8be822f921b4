"""Why wanted slots of a template found no node: the ``reason`` of a scheduler's ``Pending``.

Pure, and judged on the scheduler's final tallies (see ``why_pending``), so a plan fed back as
``current`` gives the same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from gaffer.common.model import Slot

if TYPE_CHECKING:
    from gaffer.controller.scheduler import Demand

FAILED_EVERYWHERE = "failed on every eligible node"


def why_pending(
    demand: Demand,
    unplaced: Sequence[int],
    eligible: frozenset[str],
    tally: Mapping[str, int],
    avoid: Mapping[Slot, frozenset[str]],
) -> str:
    """Why these ordinals found no node, judged on the final tallies.

    Tallies only grow while placing, so every eligible node a pending slot does not avoid is
    full at the end; judging then (not when the slot was tried) gives the same reason when the
    plan is fed back as ``current``.
    """
    reasons: dict[str, None] = {}
    over_cap = ""
    for ordinal in unplaced:
        failed_on = len(eligible.intersection(avoid.get((demand.name, ordinal), ())))
        if failed_on == len(eligible):
            reasons[FAILED_EVERYWHERE] = None
        elif failed_on:
            reasons[(
                f"failed on {failed_on} of {len(eligible)} eligible nodes, "
                f"the others hold max_per_node={demand.max_per_node}"
            )] = None
        elif not over_cap:
            over_cap = _over_cap(eligible, tally, demand)
            reasons[over_cap] = None
    return "; ".join(reasons)


def _over_cap(eligible: frozenset[str], tally: Mapping[str, int], demand: Demand) -> str:
    """Why the rest found no node: every eligible node holds max_per_node of them."""
    cap = demand.max_per_node
    elsewhere = sum(n for node, n in tally.items() if node not in eligible)
    reason = (
        f"max_per_node={cap} on {len(eligible)} eligible nodes "
        f"allows {cap * len(eligible)} of {demand.count - elsewhere}"
    )
    if elsewhere:
        reason += f" ({elsewhere} more held on nodes closed to new slots)"
    return reason
