"""Test doubles shared by the governor and async-report tests."""


class FakeTime:
    """A clock that only moves when the code under test sleeps; records every sleep."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now
