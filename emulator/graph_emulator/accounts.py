"""The ad accounts the emulator's token can see: number -> (name, currency, IANA time zone).

The first two are the small data set tests and the demo know; benchmarks ask for more
(``EmulatorData(accounts=20)``), which follow as ``act_1003``, ``act_1004``, … with names made from
their position, so the table is a pure function of the count.
"""

from __future__ import annotations

__all__ = ["DEFAULT_ACCOUNTS", "account_table"]

AccountInfo = tuple[str, str, str]

# Fixed: the tests snapshot these two accounts' names, currency and time zone.
_BASE = {
    "1001": ("Northwind Outdoor - Prospecting", "USD", "America/New_York"),
    "1002": ("Northwind Outdoor - Retargeting", "USD", "America/New_York"),
}
DEFAULT_ACCOUNTS = len(_BASE)
_FIRST_NUMBER = 1001
_CURRENCY = "USD"
_TIME_ZONE = "America/New_York"


def account_table(count: int) -> dict[str, AccountInfo]:
    """The first ``count`` accounts by bare number, in ascending order (``count`` >= 1).

    Position ``n`` (1-based) beyond the fixed two is ``act_<1000 + n>``, named
    ``"Northwind Outdoor - Account <n>"``, in USD and America/New_York.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"accounts must be a positive int, got {count!r}")
    table: dict[str, AccountInfo] = {}
    for position in range(1, count + 1):
        number = str(_FIRST_NUMBER + position - 1)
        table[number] = _BASE.get(
            number, (f"Northwind Outdoor - Account {position}", _CURRENCY, _TIME_ZONE)
        )
    return table
