"""Charts of the cache documents: small, deterministic PNGs for Dagster's Markdown metadata.

Each chart is drawn from a summary.json or insights.json payload (never a second DB query) and
embedded in Markdown as a data URI, which the Dagster UI renders (dagster-io/dagster#13443).
Same document, same bytes: matplotlib's Agg backend with a fixed font, size and DPI, no
`Software` tag and no timestamps, then quantised to a small palette so each PNG stays a few KB.

matplotlib is imported lazily, inside `render_png`: loading the Dagster definitions must not
pay for it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "MAX_CAMPAIGNS",
    "PNG_SIGNATURE",
    "chart_markdown",
    "insights_charts",
    "render_png",
    "summary_charts",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CAMPAIGNS = 8  # bars per campaign chart: the top spenders, so metadata stays small
MAX_MONTHS = 12
_SIZE_INCHES = (4.8, 2.4)
_DPI = 100  # 480 × 240 pixels
_COLOURS = ("#2f6db5", "#e07b39", "#4c9a5b", "#8a63b8")  # few colours: a small palette
_PALETTE_SIZE = 32  # colours kept after quantising (anti-aliased edges included)
_LABEL_CHARS = 18
_RC = {
    # DejaVu Sans ships inside matplotlib: the same glyphs on every machine.
    "font.family": "DejaVu Sans",
    "font.size": 7,
    "axes.titlesize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

Draw = Callable[[Any], None]  # draws on a matplotlib Axes


def _num(value: Any) -> float:
    # Money is a Decimal in the payload (or a float once read back from JSON).
    return float(value) if value is not None else 0.0


def _label(text: Any) -> str:
    text = str(text)
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


def _placeholder(message: str) -> Draw:
    """An empty chart saying why it is empty, rather than no chart or a crash."""

    def draw(ax: Any) -> None:
        ax.set_axis_off()
        ax.text(0.5, 0.5, message, ha="center", va="center", color="#666666", fontsize=9)

    return draw


def render_png(title: str, draw: Draw) -> bytes:
    """One chart as PNG bytes: byte-identical for the same `title` and drawing."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global figure state, thread-safe
    from PIL import Image

    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=_SIZE_INCHES, dpi=_DPI)
        ax = figure.add_subplot()
        ax.set_title(title, loc="left")
        draw(ax)
        figure.tight_layout(pad=0.4)
        raw = io.BytesIO()
        figure.savefig(raw, format="png", dpi=_DPI, metadata={"Software": None})
    # Quantising to a palette cuts the size several times over; PIL writes no timestamp.
    image = Image.open(raw).convert("RGB").quantize(_PALETTE_SIZE, dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def chart_markdown(alt: str, png: bytes) -> str:
    """Markdown embedding `png` as a data URI, as the Dagster UI renders it."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def _bars(
    labels: Sequence[str], series: dict[str, Sequence[float]], horizontal: bool = False
) -> Draw:
    """Grouped bars, one colour per series (a legend when there are several)."""

    def draw(ax: Any) -> None:
        width = 0.8 / max(len(series), 1)
        positions = range(len(labels))
        for i, (name, values) in enumerate(series.items()):
            at = [p - 0.4 + width * (i + 0.5) for p in positions]
            bar = ax.barh if horizontal else ax.bar
            bar(at, values, width, label=name, color=_COLOURS[i % len(_COLOURS)])
        if horizontal:
            ax.set_yticks(list(positions), labels)
            ax.invert_yaxis()  # the first item (the top spender) on top
        else:
            ax.set_xticks(list(positions), labels, rotation=45, ha="right")
        if len(series) > 1:
            ax.legend(frameon=False)

    return draw


def _twin(
    labels: Sequence[str], bars: Sequence[float], line: Sequence[float], names: tuple[str, str]
) -> Draw:
    """Bars on the left axis and a line on the right one (spend and leads by day)."""

    def draw(ax: Any) -> None:
        positions = list(range(len(labels)))
        ax.bar(positions, bars, color=_COLOURS[0], label=names[0])
        ax.set_ylabel(names[0], color=_COLOURS[0])
        right = ax.twinx()
        right.plot(positions, line, color=_COLOURS[1], marker="o", markersize=2, label=names[1])
        right.set_ylabel(names[1], color=_COLOURS[1])
        right.set_ylim(bottom=0)
        step = max(1, len(labels) // 8)  # at most ~8 date labels stay readable at 480 px
        ax.set_xticks(positions[::step], [label[5:] for label in labels[::step]])

    return draw


def _revenue_by_month(summary: dict[str, Any]) -> Draw:
    months = summary["revenue"]["by_month"]
    if not months:
        return _placeholder("no revenue orders yet")
    labels = sorted({m["month"] for m in months})[-MAX_MONTHS:]
    currencies = sorted({m["currency"] for m in months})
    amount = {(m["month"], m["currency"]): _num(m["revenue"]) for m in months}
    series = {c: [amount.get((month, c), 0.0) for month in labels] for c in currencies}
    return _bars(labels, series)


def _leads_by_day(summary: dict[str, Any]) -> Draw:
    days = summary["leads"]["by_day"]
    if not any(d["leads"] for d in days):
        return _placeholder("no leads in the last 30 days")
    labels = [str(d["date"]) for d in days]

    def draw(ax: Any) -> None:
        _bars([label[5:] for label in labels], {"leads": [d["leads"] for d in days]})(ax)
        ax.set_xticks(range(0, len(labels), 4), [label[5:] for label in labels[::4]])

    return draw


def _cost_per_lead_by_campaign(summary: dict[str, Any]) -> Draw:
    rows = [c for c in summary["ad_spend"]["by_campaign"] if c["cost_per_lead"] is not None]
    if not rows:
        return _placeholder("no campaign with Meta-reported leads")
    rows = rows[:MAX_CAMPAIGNS]  # by_campaign is ordered by spend: the top spenders
    labels = [_label(c["campaign_name"] or c["campaign_id"]) for c in rows]
    return _bars(labels, {"cost per lead": [_num(c["cost_per_lead"]) for c in rows]}, True)


def _customers_by_tier(summary: dict[str, Any]) -> Draw:
    tiers = summary["customers"]["by_tier"]
    if not tiers:
        return _placeholder("no customers yet")
    return _bars([_label(t["tier"]) for t in tiers], {"customers": [t["customers"] for t in tiers]})


# metadata key -> (title, drawing from the summary payload)
def _summary_spend_leads_by_day(summary: dict[str, Any]) -> Draw:
    days = summary["ad_spend"]["by_day"]  # always the 30 days of the window, zeros included
    if not any(_num(d["spend"]) or d["leads"] for d in days):
        return _placeholder("no ad spend in the last 30 days")
    return _spend_leads_by_day(summary["ad_spend"])


_SUMMARY_CHARTS: dict[str, tuple[str, Callable[[dict[str, Any]], Draw]]] = {
    "chart_revenue_by_month": ("revenue by month", _revenue_by_month),
    "chart_ad_spend_by_day": (
        "spend and Meta-reported leads by day (last 30 days)",
        lambda summary: _summary_spend_leads_by_day(summary),
    ),
    "chart_leads_by_day": ("leads by day (CRM, last 30 days)", _leads_by_day),
    "chart_cost_per_lead_by_campaign": ("cost per lead by campaign", _cost_per_lead_by_campaign),
    "chart_customers_by_tier": ("customers by tier", _customers_by_tier),
}


def summary_charts(summary: dict[str, Any]) -> dict[str, bytes]:
    """The summary.json charts as PNG bytes, by metadata key."""
    return {key: render_png(title, make(summary)) for key, (title, make) in _SUMMARY_CHARTS.items()}


def _spend_leads_by_day(insights: dict[str, Any]) -> Draw:
    days = insights["by_day"]
    if not days:
        return _placeholder("no ad insights in this period")
    return _twin(
        [str(d["date"]) for d in days],
        [_num(d["spend"]) for d in days],
        [_num(d.get("leads")) for d in days],
        ("spend", "leads"),
    )


def _spend_leads_by_campaign(insights: dict[str, Any]) -> Draw:
    rows = insights["by_campaign"][:MAX_CAMPAIGNS]  # ordered by spend: the top spenders
    if not rows:
        return _placeholder("no campaign with insights in this period")
    labels = [_label(c["campaign_name"] or c["campaign_id"]) for c in rows]
    spend = [_num(c["spend"]) for c in rows]
    leads = [_num(c.get("leads")) for c in rows]

    def draw(ax: Any) -> None:
        _bars(labels, {"spend": spend}, horizontal=True)(ax)
        # Leads in the bar's label: one axis, no second scale to misread.
        for y, (value, count) in enumerate(zip(spend, leads, strict=True)):
            ax.text(value, y, f" {count:g} leads", va="center", fontsize=6)
        ax.margins(x=0.25)

    return draw


_INSIGHTS_CHARTS: dict[str, tuple[str, Callable[[dict[str, Any]], Draw]]] = {
    "chart_spend_leads_by_day": ("spend and leads by day", _spend_leads_by_day),
    "chart_spend_leads_by_campaign": (
        f"spend and leads by campaign (top {MAX_CAMPAIGNS} by spend)",
        _spend_leads_by_campaign,
    ),
}


def insights_charts(insights: dict[str, Any]) -> dict[str, bytes]:
    """The marketing/insights.json charts as PNG bytes, by metadata key."""
    return {
        key: render_png(title, make(insights)) for key, (title, make) in _INSIGHTS_CHARTS.items()
    }
