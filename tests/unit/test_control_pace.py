"""harness.campaign.ControlPace: the other vantages stay within ``ahead`` jobs of the control."""

from __future__ import annotations

import asyncio

from harness.campaign import ControlPace


def test_a_vantage_waits_for_the_control_and_the_control_never_waits() -> None:
    async def scenario() -> list[str]:
        pace = ControlPace(ahead=2)
        log: list[str] = []

        async def other() -> None:
            for sent in range(5):
                await pace.turn(sent)
                log.append(f"other {sent}")

        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        assert log == ["other 0", "other 1"]  # two ahead of a control that answered nothing
        for _ in range(3):
            await pace.control_answered()
            await asyncio.sleep(0)
            log.append(f"control {pace.answered}")
        await asyncio.wait_for(task, 1)
        return log

    assert asyncio.run(scenario()) == ["other 0", "other 1", "other 2", "control 1", "other 3", "control 2",
                                       "other 4", "control 3"]
