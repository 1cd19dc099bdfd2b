"""The pre-trade checks: pure functions of the policy, the command and what risk counted.

Every check runs, so a refusal names all breached limits; the first one in this order is
the decision's outcome. A value equal to its limit passes; only a value above it breaches.
Orders are valued at their limit price (limit orders) or the last mark (market orders);
positions are valued at the mark.

Orders risk approved that have not filled yet (reservations, services.risk.exposure) count
as if they will fill: the position check takes the account's position after every open
order on the order's side fills, and the capital check values each instrument at the worse
of "every open buy fills" and "every open sell fills".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from gate4.risk.v1 import risk_pb2
from services.risk.policy import Instruments, Policy
from services.runtime import outcomes
from services.runtime.decimals import format_decimal, parse_decimal
from services.runtime.timeutil import as_utc
from services.runtime.validation import ID_RE, INSTRUMENT_RE

SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit")
ZERO = Decimal(0)
HUNDRED = Decimal(100)


class Undecidable(ValueError):
    """The command cannot be evaluated (malformed or missing input): the answer is no."""


@dataclass(frozen=True)
class Breach:
    outcome: str
    #: The policy field, e.g. "limits.maxOrderNotional".
    limit: str
    value: str
    threshold: str
    detail: str

    def message(self) -> risk_pb2.Breach:
        return risk_pb2.Breach(
            outcome=self.outcome,
            limit=self.limit,
            value=self.value,
            threshold=self.threshold,
            detail=self.detail,
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "outcome": self.outcome,
            "limit": self.limit,
            "value": self.value,
            "threshold": self.threshold,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Position:
    """One deployment's position in one instrument, as execution's ledger versioned it."""

    deployment_id: str
    instrument: str
    quantity: Decimal
    version: int
    #: What one unit is worth (the last mark, else the average price); None when unknown.
    price: Decimal | None


@dataclass(frozen=True)
class OrderContext:
    """An order and what execution knows around it (OrderIntent), parsed and checked.

    services.risk.exposure replaces the position, exposure and open-order figures with what
    risk itself counted, and fills in the quantities other orders have reserved.
    """

    instrument: str
    side: str
    type: str
    quantity: Decimal
    limit_price: Decimal | None
    reduce_only: bool
    #: Signed positions before the order: the deployment's and the whole account's.
    position: Decimal
    account_position: Decimal
    account_open_orders: int
    capital_allocation: Decimal | None
    deployment_gross_exposure: Decimal
    mark_price: Decimal | None
    mark_time: datetime | None
    #: Execution's versioned snapshot of the deployment's positions; () from older callers.
    positions: tuple[Position, ...] = ()
    #: The instruments the deployment may trade; () when the caller did not say.
    deployment_instruments: tuple[str, ...] = ()
    #: What other open orders of the account reserve in the instrument (unfilled quantity).
    open_buys: Decimal = ZERO
    open_sells: Decimal = ZERO
    #: The same for the deployment's own open orders.
    deployment_open_buys: Decimal = ZERO
    deployment_open_sells: Decimal = ZERO

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side == "buy" else -self.quantity

    def price(self) -> Decimal | None:
        """What one unit of the order is worth: its limit price, or the mark for market orders."""
        return self.limit_price if self.type == "limit" else self.mark_price


@dataclass(frozen=True)
class DeploymentContext:
    instruments: tuple[str, ...]
    capital_allocation: Decimal


def pct(value: Decimal) -> str:
    return format_decimal(value.quantize(Decimal("0.0001")))


# -- parsing --------------------------------------------------------------------------------


def _decimal(
    name: str, value: str, *, signed: bool = False, default: Decimal | None = None
) -> Decimal:
    if not value:
        if default is None:
            raise Undecidable(f"{name} is missing")
        return default
    number = parse_decimal(value)
    if number is None:
        raise Undecidable(f"{name} {value!r} is not a decimal")
    if not signed and number < 0:
        raise Undecidable(f"{name} {value!r} is not a non-negative decimal")
    return number


def order_context(intent: risk_pb2.OrderIntent) -> OrderContext:
    """Parses an OrderIntent; raises Undecidable naming the first bad field."""
    if not INSTRUMENT_RE.match(intent.instrument):
        raise Undecidable(f"instrument {intent.instrument!r} is not an instrument symbol")
    if intent.side not in SIDES:
        raise Undecidable(f"side {intent.side!r} is not buy or sell")
    if not intent.account_id or not intent.deployment_id:
        raise Undecidable("the order names no account or no deployment")
    for name, value in (("account", intent.account_id), ("deployment", intent.deployment_id)):
        if not ID_RE.match(value):
            # Risk keeps its books per account, and the order's row names both.
            raise Undecidable(f"{name} id {value!r} is malformed")
    if not ID_RE.match(intent.order_id):
        # Its reservation and its one decision are kept under this id.
        raise Undecidable(f"order id {intent.order_id!r} is missing or malformed")
    order_type = intent.type
    if order_type not in ORDER_TYPES:
        raise Undecidable(f"type {intent.type!r} is not market or limit")
    quantity = _decimal("quantity", intent.quantity)
    if quantity <= 0:
        raise Undecidable("quantity must be greater than zero")
    limit_price = None
    if order_type == "limit":
        limit_price = _decimal("limitPrice", intent.limit_price)
        if limit_price <= 0:
            raise Undecidable("limitPrice must be greater than zero")
    mark_price = _decimal("markPrice", intent.mark_price, default=ZERO) or None
    if intent.account_open_orders < 0 or intent.open_orders < 0:
        raise Undecidable("open order counts cannot be negative")
    capital = _decimal("capitalAllocation", intent.capital_allocation, default=ZERO)
    for symbol in intent.deployment_instruments:
        if not INSTRUMENT_RE.match(symbol):
            raise Undecidable(f"deployment instrument {symbol!r} is not an instrument symbol")
    return OrderContext(
        instrument=intent.instrument,
        side=intent.side,
        type=order_type,
        quantity=quantity,
        limit_price=limit_price,
        reduce_only=intent.reduce_only,
        position=_decimal("positionQuantity", intent.position_quantity, signed=True, default=ZERO),
        account_position=_decimal(
            "accountPositionQuantity", intent.account_position_quantity, signed=True, default=ZERO
        ),
        account_open_orders=intent.account_open_orders,
        capital_allocation=capital if capital > 0 else None,
        deployment_gross_exposure=_decimal(
            "deploymentGrossExposure", intent.deployment_gross_exposure, default=ZERO
        ),
        mark_price=mark_price,
        mark_time=as_utc(intent.mark_time.ToDatetime()) if intent.HasField("mark_time") else None,
        positions=tuple(_position(p, intent.deployment_id) for p in intent.positions),
        deployment_instruments=tuple(intent.deployment_instruments),
    )


def _position(snapshot: risk_pb2.PositionSnapshot, deployment_id: str) -> Position:
    """A snapshot of the order's own deployment (an empty deployment id means that one)."""
    if snapshot.deployment_id not in ("", deployment_id):
        raise Undecidable(
            f"a position of deployment {snapshot.deployment_id!r} came with an order of "
            f"deployment {deployment_id!r}"
        )
    if not INSTRUMENT_RE.match(snapshot.instrument):
        raise Undecidable(f"position instrument {snapshot.instrument!r} is not a symbol")
    if snapshot.version < 0:
        raise Undecidable(f"the {snapshot.instrument} position has a negative version")
    price = _decimal(f"{snapshot.instrument} position price", snapshot.price, default=ZERO)
    return Position(
        deployment_id=deployment_id,
        instrument=snapshot.instrument,
        quantity=_decimal(
            f"{snapshot.instrument} position quantity", snapshot.quantity, signed=True, default=ZERO
        ),
        version=snapshot.version,
        price=price or None,
    )


def deployment_context(
    account_id: str, instruments: list[str], capital_allocation: str
) -> DeploymentContext:
    if not account_id:
        raise Undecidable("the deployment names no account")
    if not instruments:
        raise Undecidable("a deployment needs at least one instrument")
    for symbol in instruments:
        if not INSTRUMENT_RE.match(symbol):
            raise Undecidable(f"instrument {symbol!r} is not an instrument symbol")
    capital = _decimal("capitalAllocation", capital_allocation)
    if capital <= 0:
        raise Undecidable("capitalAllocation must be greater than zero")
    return DeploymentContext(tuple(instruments), capital)


# -- checks ---------------------------------------------------------------------------------


def reducing_breach(order: OrderContext) -> Breach | None:
    """A reduce-only order must shrink the deployment's position without flipping it."""
    position = order.position
    if position == 0 or (position > 0) == (order.side == "buy"):
        side = "long" if position > 0 else "short" if position < 0 else "flat"
        return Breach(
            outcomes.REDUCE_ONLY_VIOLATION,
            "reduceOnly",
            format_decimal(position),
            "",
            f"reduce-only {order.side} of {format_decimal(order.quantity)} {order.instrument} "
            "does not reduce "
            f"the deployment's {side} position {format_decimal(position)}",
        )
    if order.quantity > abs(position):
        return Breach(
            outcomes.REDUCE_ONLY_VIOLATION,
            "reduceOnly",
            format_decimal(order.quantity),
            format_decimal(abs(position)),
            f"reduce-only quantity {format_decimal(order.quantity)} exceeds the position "
            f"{format_decimal(position)} {order.instrument}; it would open the other side",
        )
    return None


def instrument_breach(instruments: Instruments, symbol: str) -> Breach | None:
    if symbol in instruments.restricted:
        return Breach(
            outcomes.INSTRUMENT_RESTRICTED,
            "instruments.restricted",
            symbol,
            "",
            f"instrument {symbol} is restricted by the policy",
        )
    if instruments.allowed and symbol not in instruments.allowed:
        return Breach(
            outcomes.INSTRUMENT_NOT_ALLOWED,
            "instruments.allowed",
            symbol,
            ",".join(sorted(instruments.allowed)),
            f"instrument {symbol} is not in the allowed list "
            f"({', '.join(sorted(instruments.allowed))})",
        )
    return None


def deployment_instrument_breach(order: OrderContext) -> Breach | None:
    """An order may only trade what its deployment was created for (when the caller says)."""
    allowed = order.deployment_instruments
    if not allowed or order.instrument in allowed:
        return None
    return Breach(
        outcomes.DEPLOYMENT_INSTRUMENT_NOT_ALLOWED,
        "deployment.instruments",
        order.instrument,
        ",".join(sorted(allowed)),
        f"instrument {order.instrument} is not one the deployment trades "
        f"({', '.join(sorted(allowed))})",
    )


def worst_case(position: Decimal, open_buys: Decimal, open_sells: Decimal) -> Decimal:
    """The largest |position| open orders can lead to: all buys fill, or all sells fill."""
    return max(abs(position + open_buys), abs(position - open_sells))


def order_breaches(
    policy: Policy,
    order: OrderContext,
    *,
    now: datetime,
    orders_in_window: int,
    daily_loss: Decimal,
) -> list[Breach]:
    """Every limit a risk-increasing order breaches, in evaluation order."""
    limits = policy.limits
    found: list[Breach] = []
    for breach in (
        deployment_instrument_breach(order),
        instrument_breach(policy.instruments, order.instrument),
    ):
        if breach is not None:
            found.append(breach)

    mark = order.mark_price
    if mark is None:
        found.append(
            Breach(
                outcomes.MARK_MISSING,
                "limits.markMaxAgeSeconds",
                "",
                str(limits.mark_max_age_seconds),
                f"no mark for {order.instrument}: orders cannot be valued or collared",
            )
        )
    else:
        age = (now - order.mark_time).total_seconds() if order.mark_time else None
        if age is None or age > limits.mark_max_age_seconds:
            found.append(
                Breach(
                    outcomes.MARK_STALE,
                    "limits.markMaxAgeSeconds",
                    "" if age is None else f"{age:.0f}",
                    str(limits.mark_max_age_seconds),
                    f"the mark of {order.instrument} is "
                    + ("undated" if age is None else f"{age:.0f}s old")
                    + f", older than markMaxAgeSeconds {limits.mark_max_age_seconds}",
                )
            )
            mark = None  # a stale mark values nothing below

    if order.limit_price is not None and mark is not None:
        distance = abs(order.limit_price - mark) / mark * HUNDRED
        if distance > limits.price_collar_pct:
            found.append(
                Breach(
                    outcomes.PRICE_COLLAR,
                    "limits.priceCollarPct",
                    pct(distance),
                    format_decimal(limits.price_collar_pct),
                    f"limit price {format_decimal(order.limit_price)} is {pct(distance)}% from the "
                    f"mark {format_decimal(mark)}, beyond priceCollarPct "
                    f"{format_decimal(limits.price_collar_pct)}",
                )
            )

    if order.quantity > limits.max_order_quantity:
        found.append(
            Breach(
                outcomes.ORDER_QUANTITY_LIMIT,
                "limits.maxOrderQuantity",
                format_decimal(order.quantity),
                format_decimal(limits.max_order_quantity),
                f"order quantity {format_decimal(order.quantity)} exceeds maxOrderQuantity "
                f"{format_decimal(limits.max_order_quantity)}",
            )
        )

    price = order.limit_price if order.type == "limit" else mark
    if price is not None:
        notional = order.quantity * price
        if notional > limits.max_order_notional:
            found.append(
                Breach(
                    outcomes.ORDER_NOTIONAL_LIMIT,
                    "limits.maxOrderNotional",
                    format_decimal(notional),
                    format_decimal(limits.max_order_notional),
                    f"order notional {format_decimal(notional)} exceeds maxOrderNotional "
                    f"{format_decimal(limits.max_order_notional)}",
                )
            )

    # The worst case on the order's side: every open order of that side fills first.
    reserved = order.open_buys if order.side == "buy" else -order.open_sells
    before = order.account_position + reserved
    after = before + order.signed_quantity
    if mark is not None and abs(after) > abs(before):
        position_notional = abs(after) * mark
        if position_notional > limits.max_position_notional:
            counting = (
                f" counting {format_decimal(abs(reserved))} reserved by open {order.side} orders"
                if reserved
                else ""
            )
            found.append(
                Breach(
                    outcomes.POSITION_NOTIONAL_LIMIT,
                    "limits.maxPositionNotional",
                    format_decimal(position_notional),
                    format_decimal(limits.max_position_notional),
                    f"the account's {order.instrument} position would be "
                    f"{format_decimal(after)}{counting}, "
                    f"worth {format_decimal(position_notional)}, above maxPositionNotional "
                    f"{format_decimal(limits.max_position_notional)}",
                )
            )

    buys, sells = order.deployment_open_buys, order.deployment_open_sells
    grown = worst_case(
        order.position,
        buys + (order.quantity if order.side == "buy" else ZERO),
        sells + (order.quantity if order.side == "sell" else ZERO),
    ) - worst_case(order.position, buys, sells)
    if order.capital_allocation is not None and price is not None and grown > 0:
        exposure = order.deployment_gross_exposure + grown * price
        if exposure > order.capital_allocation:
            found.append(
                Breach(
                    outcomes.DEPLOYMENT_CAPITAL_LIMIT,
                    "capitalAllocation",
                    format_decimal(exposure),
                    format_decimal(order.capital_allocation),
                    f"the deployment's gross exposure would be {format_decimal(exposure)}, "
                    "above its "
                    f"capital allocation {format_decimal(order.capital_allocation)}",
                )
            )

    open_after = order.account_open_orders + 1
    if open_after > limits.max_open_orders:
        found.append(
            Breach(
                outcomes.OPEN_ORDERS_LIMIT,
                "limits.maxOpenOrders",
                str(open_after),
                str(limits.max_open_orders),
                f"the account would have {open_after} open orders, above maxOpenOrders "
                f"{limits.max_open_orders}",
            )
        )

    rate = limits.order_rate
    if orders_in_window + 1 > rate.max_orders:
        found.append(
            Breach(
                outcomes.ORDER_RATE_LIMIT,
                "limits.orderRate",
                str(orders_in_window + 1),
                str(rate.max_orders),
                f"this would be order {orders_in_window + 1} of the account in "
                f"{rate.window_seconds}s, above orderRate.maxOrders {rate.max_orders}",
            )
        )

    loss = daily_loss_breach(policy, daily_loss)
    if loss is not None:
        found.append(loss)
    return found


def deployment_breaches(
    policy: Policy, deployment: DeploymentContext, *, daily_loss: Decimal
) -> list[Breach]:
    """Every limit a new deployment breaches, in evaluation order."""
    found = [
        b
        for b in (instrument_breach(policy.instruments, s) for s in deployment.instruments)
        if b is not None
    ]
    limit = policy.limits.max_capital_allocation
    if deployment.capital_allocation > limit:
        found.append(
            Breach(
                outcomes.CAPITAL_ALLOCATION_LIMIT,
                "limits.maxCapitalAllocation",
                format_decimal(deployment.capital_allocation),
                format_decimal(limit),
                f"capital allocation {format_decimal(deployment.capital_allocation)} exceeds "
                f"maxCapitalAllocation {format_decimal(limit)}",
            )
        )
    loss = daily_loss_breach(policy, daily_loss)
    if loss is not None:
        found.append(loss)
    return found


def daily_loss_breach(policy: Policy, daily_loss: Decimal) -> Breach | None:
    limit = policy.limits.daily_loss_limit
    if daily_loss > limit:
        return Breach(
            outcomes.DAILY_LOSS_LIMIT,
            "limits.dailyLossLimit",
            format_decimal(daily_loss),
            format_decimal(limit),
            f"the account has lost {format_decimal(daily_loss)} today (UTC), above dailyLossLimit "
            f"{format_decimal(limit)}",
        )
    return None
