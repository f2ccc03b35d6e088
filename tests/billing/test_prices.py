"""Pricing, amounts and the rate limiter: pure functions, exact integers."""

from __future__ import annotations

import pytest

from mediarelay.billing.accounts import parse_amount
from mediarelay.billing.prices import PriceRule, PriceTable, final_price, quote
from mediarelay.billing.ratelimit import RateLimiter
from mediarelay.billing.service import micro
from mediarelay.domain import Asset, Operation, TaskSpec


def spec(model: str, op: Operation, **params: object) -> TaskSpec:
    return TaskSpec(
        dialect="native", model=model, operation=op, params=dict(params), request={}, public_id="p"
    )


def asset(role: str, duration: float | None = None) -> Asset:
    return Asset(id=1, role=role, key="k", mime="x", bytes=1, sha256="0", duration=duration)


TABLE = PriceTable(
    rules=(
        PriceRule(model="sora-2-pro", per_task=500_000, per_second=90_000),
        PriceRule(model="sora-2*", operation="text_to_video", per_task=100_000, per_second=33_333),
        PriceRule(model="*", operation="upscale", per_image=20_000),
    ),
    default=PriceRule(per_task=7),
)


def test_first_matching_rule_wins_and_the_default_prices_the_rest() -> None:
    assert TABLE.rule_for("sora-2-pro", "text_to_video").per_task == 500_000
    assert TABLE.rule_for("sora-2", "text_to_video").per_second == 33_333
    assert TABLE.rule_for("sora-2", "image_to_video").per_task == 7  # operation glob did not match
    assert TABLE.rule_for("anything", "upscale").per_image == 20_000
    assert PriceTable().rule_for("sora-2", "text_to_video") == PriceRule()  # free by default


def test_quote_prices_requested_seconds_and_expected_images() -> None:
    q = quote(TABLE, spec("sora-2", Operation.TEXT_TO_VIDEO, seconds=10), 5.0)
    assert q.estimate == 100_000 + 333_330 and q.snapshot["ms"] == 10_000 and q.snapshot["images"] == 0
    # Fractional micro-units round up: 33_333 * 1.5 s = 49_999.5 -> 50_000.
    assert quote(TABLE, spec("sora-2", Operation.TEXT_TO_VIDEO, seconds=1.5), 5.0).estimate == 150_000
    # No (or a nonsensical) length: the configured default length.
    assert quote(TABLE, spec("sora-2", Operation.TEXT_TO_VIDEO), 5.0).estimate == 100_000 + 166_665
    assert quote(TABLE, spec("sora-2", Operation.TEXT_TO_VIDEO, seconds="nan"), 5.0).snapshot["ms"] == 5000
    up = quote(TABLE, spec("x", Operation.UPSCALE, target_urls=["a", "b", "c"]), 5.0)
    assert up.estimate == 60_000 and up.snapshot["images"] == 3
    assert quote(TABLE, spec("x", Operation.UPSCALE), 5.0).estimate == 20_000  # at least one image


def test_final_price_uses_the_real_output_and_never_exceeds_the_estimate() -> None:
    q = quote(TABLE, spec("sora-2", Operation.TEXT_TO_VIDEO, seconds=10), 5.0)
    shorter = [asset("video", 4.0), asset("poster"), asset("thumbnail")]  # previews cost nothing
    assert final_price(q.snapshot, q.estimate, shorter) == 100_000 + 133_332
    assert final_price(q.snapshot, q.estimate, [asset("video", 10.04)]) == q.estimate  # capped
    assert final_price(q.snapshot, q.estimate, [asset("video", None)]) == q.estimate  # unknown length
    up = quote(TABLE, spec("x", Operation.UPSCALE, target_urls=["a", "b", "c"]), 5.0)
    assert final_price(up.snapshot, up.estimate, [asset("image"), asset("thumbnail")]) == 20_000
    assert final_price(up.snapshot, up.estimate, [asset("image")] * 5) == 60_000


def test_amounts_are_exact_decimals() -> None:
    assert parse_amount("12.5") == 12_500_000
    assert parse_amount("0.000001") == 1
    assert parse_amount("1_000") == 1_000_000_000
    assert parse_amount("-2") == -2_000_000
    for bad in ("0.0000001", "abc", "1e400", "inf", ""):
        with pytest.raises(ValueError):
            parse_amount(bad)
    assert micro(12_500_000) == "12.500000" and micro(-1) == "-0.000001" and micro(0) == "0.000000"


def test_rate_limiter_is_a_token_bucket_per_key() -> None:
    now = [1000.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.take("a", 3) for _ in range(3)] == [0.0, 0.0, 0.0]  # a burst of rpm
    wait = limiter.take("a", 3)
    assert wait == pytest.approx(20.0)  # one token every 60/3 s
    assert limiter.take("b", 3) == 0.0  # keys are independent
    now[0] += 10
    assert limiter.take("a", 3) == pytest.approx(10.0)  # refused calls spend nothing
    now[0] += 10
    assert limiter.take("a", 3) == 0.0
    assert limiter.take("a", 600) == 0.0  # a new limit starts with a full bucket


def test_requested_seconds_are_not_inflated_by_float_artifacts() -> None:
    rule = PriceTable(rules=(PriceRule(per_second=1000),))
    assert quote(rule, spec("m", Operation.TEXT_TO_VIDEO, seconds=4.1), 5.0).snapshot["ms"] == 4100
    assert quote(rule, spec("m", Operation.TEXT_TO_VIDEO, seconds=0.1), 5.0).estimate == 100
