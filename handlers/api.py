"""The till API (`/api/v1`): orders, refunds, member lookup, behaviour events.

Bearer-token auth compared in constant time; every refusal is a JSON body naming the error,
and for a bad field the field; the OpenAPI document at /api/v1/openapi.json describes it all.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, create_model
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain import orders, till
from domain.errors import DomainError, InvalidInput, Reason
from domain.events import EventReceipt, record_event
from domain.money import amount_pattern, format_money, parse_money
from domain.program import Program
from domain.shop import Shop

ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,64}$"
# A member code (any case, with or without separators), a phone number as typed at a till, or
# the member's one-time spend code.
MEMBER_PATTERN = r"^[0-9A-Za-z+()\-. ]{1,32}$"
COUPON_PATTERN = r"^[0-9A-Za-z\- ]{1,32}$"
EXAMPLE_MEMBER = "K7QM-4PZJ"  # a well-formed code: its check character is right
STATUS_BY_CODE = {
    "member_not_found": 404,
    "order_not_found": 404,
    "member_frozen": 403,
    "idempotency_conflict": 409,
    "insufficient_points": 409,
    "spend_proof_required": 403,
    "spend_code_unknown": 404,  # like an unknown member: a reference to nothing
    "spend_code_expired": 409,
    "spend_code_used": 409,
    "card_code_refused": 409,  # a rotating card code that is forged or over a minute old
}
# A well-formed request the shop's current state refuses is a conflict (409), a reference to
# nothing is 404; 422 stays for what is wrong with the request itself.
STATUS_BY_REASON: dict[str, int] = {
    Reason.COUPON_UNKNOWN: 404,
    Reason.COUPON_OTHER_MEMBER: 409,
    Reason.COUPON_STATUS: 409,
    Reason.COUPON_NOT_VALID_NOW: 409,
    Reason.COUPON_MIN_SPEND: 409,
    Reason.COUPON_JUST_USED: 409,
    Reason.OFFSET_BALANCE: 409,
    Reason.REFUND_OVER_LEFT: 409,
}


class ApiError(BaseModel):
    error: str = Field(description="machine-readable error code")
    message: str
    field: str | None = Field(default=None, description="the request field at fault")


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ApiError, "description": "missing or wrong bearer token"},
    403: {
        "model": ApiError,
        "description": "the member is frozen (`member_frozen`), or points are to be spent "
        "without the member's one-time spend code (`spend_proof_required`)",
    },
    404: {
        "model": ApiError,
        "description": "unknown member, order, coupon or spend code (`spend_code_unknown`)",
    },
    408: {"model": ApiError, "description": "the body did not arrive within 10 s"},
    409: {
        "model": ApiError,
        "description": "the id was used before with a different body, or the shop's state "
        "refuses it: not enough points, a coupon that is used, expired, another member's or "
        "below its minimum spend, a refund over what is left of the order, a spend code "
        "already used (`spend_code_used`) or expired (`spend_code_expired`), a rotating card "
        "code that is not genuine or over a minute old (`card_code_refused`)",
    },
    413: {"model": ApiError, "description": "the body is over 16 KiB"},
    422: {"model": ApiError, "description": "a field is wrong: `field` names it"},
    503: {"model": ApiError, "description": "busy: try again shortly"},
}


def _whole_number(value: object) -> object:
    """A JSON integer, as JSON Schema means it (170.0 is one); never a string or a boolean,
    which Python would otherwise turn into a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)
    return value


class OrderIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"order_id": "1042", "member": EXAMPLE_MEMBER, "amount": "199.00"}]
        },
    )

    order_id: str = Field(pattern=ID_PATTERN, description="the till's order id; idempotency key")
    member: str = Field(
        pattern=MEMBER_PATTERN,
        description="member code or phone number (earns points, may use a coupon by its "
        "code), or the member's one-time spend code from \"Pay with points\" (may also "
        "redeem points; the order uses it up)",
    )
    amount: str = Field(description="order total after the tier discount")  # see for_program
    occurred_at: AwareDatetime | None = Field(
        default=None,
        description="when the sale happened (offline tills), with its offset; not in the "
        "future and not older than the program allows (30 days by default)",
    )
    redeem_points: Annotated[int, BeforeValidator(_whole_number)] = Field(
        default=0, ge=0, le=100_000_000,
        description="points to offset: a JSON integer (not a string, not true/false); at most "
        "50% of the order and the member's balance; only with the member's spend code in "
        "`member`",
    )
    coupon_code: str | None = Field(
        default=None, pattern=COUPON_PATTERN, description="a coupon of this member's"
    )


class RefundIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"refund_id": "R-1042-1", "amount": "99.50"}]},
    )

    refund_id: str = Field(pattern=ID_PATTERN, description="idempotency key of the refund")
    amount: str = Field(description="refunded share of the order amount")  # see for_program


M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class AmountRule:
    """The program's amount rule as the schema states it: the exact pattern and its words."""

    pattern: str
    words: str

    @classmethod
    def of(cls, program: Program) -> AmountRule:
        top = program.orders.max_amount
        return cls(
            pattern=amount_pattern(top),
            words="a decimal string in the shop's currency with ASCII digits and at most two "
            f"decimals, more than 0 and at most {format_money(top - top % 100)}, such as "
            '"199.00"',
        )

    def for_model(self, model: type[M], **fields: Any) -> type[M]:
        """``model`` with its ``amount`` held to this rule (the schema then says it exactly),
        and any other field replaced as given."""
        described = f"{model.model_fields['amount'].description}: {self.words}"
        return create_model(
            model.__name__, __base__=model,
            amount=(str, Field(pattern=self.pattern, description=described)), **fields,
        )

    def query(self) -> object:
        return Annotated[
            str | None,
            Query(pattern=self.pattern, description=f"order amount, for the cap: {self.words}"),
        ]


def _redeem_points(program: Program) -> tuple[object, object]:
    """``redeem_points`` with the program's step (points are offset in whole minor units)."""
    step = max(program.points.offset_points_per_unit // 100, 1)
    field = OrderIn.model_fields["redeem_points"]
    return (
        Annotated[int, BeforeValidator(_whole_number)],
        Field(
            default=0, ge=0, le=100_000_000, multiple_of=step,
            description=f"{field.description}; a multiple of {step}",
        ),
    )


def _typed(**types: object) -> Callable[[F], F]:
    """Give FastAPI the program's models for some parameters (the signature keeps the base
    model, which is what the code reads)."""

    def apply(route: F) -> F:
        route.__annotations__.update(types)
        return route

    return apply


class OrderOut(BaseModel):
    order_id: str
    member_code: str
    amount: str
    coupon_code: str | None
    coupon_discount: str
    points_redeemed: int
    points_offset: str
    to_pay: str = Field(description="what the till must charge")
    points_earned: int
    growth_earned: int
    balance: int
    tier: str
    previous_tier: str
    tier_changed: bool
    next_tier: str | None
    growth_to_next_tier: int
    occurred_at: datetime


class CouponOut(BaseModel):
    code: str | None = Field(
        default=None,
        description="only when the member was looked up by their spend code; otherwise the "
        "member says the code (or shows the coupon) at the till",
    )
    kind: str
    value: str
    min_spend: str
    valid_until: datetime


class MemberOut(BaseModel):
    code: str
    name: str
    tier: str
    tier_name: str
    discount_percent: int
    balance: int
    growth: int
    max_offset_points: int | None = Field(description="for the given ?amount=")
    max_offset_amount: str | None
    coupons: list[CouponOut]
    can_redeem_points: bool = Field(
        description="the member was looked up by a valid spend code: an order with that code "
        "may redeem points"
    )


class EventIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"event_id": "rv-88", "kind": "review"}]},
    )

    event_id: str = Field(pattern=ID_PATTERN)
    kind: Literal["review", "share"]


_bearer = HTTPBearer(auto_error=False, description="POS_API_TOKEN")


class Unauthorized(Exception):
    pass


async def _authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected: str | None = request.app.state.pos_token
    given = credentials.credentials if credentials else ""
    # Constant-time comparison; with no token configured every call is refused.
    if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized()


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = request.app.state.session_factory
    async with factory() as session:
        yield session


async def _shop(request: Request) -> Shop:
    shop: Shop = request.app.state.shop
    return shop


SessionDep = Annotated[AsyncSession, Depends(_session)]
ShopDep = Annotated[Shop, Depends(_shop)]


def _money(text: str, field: str) -> int:
    try:
        return parse_money(text)
    except ValueError as exc:
        raise InvalidInput(field, Reason.NOT_MONEY) from exc


# The till API answers machines in English, worded here from the error's reason and values
# (the chat words the same errors in each reader's language, in templates/<lang>/errors/).
REASON_MESSAGES: dict[str, Callable[[dict[str, Any]], str]] = {
    Reason.LENGTH: lambda d: f"must be {d['min_length']} to {d['max_length']} characters",
    Reason.ID_CHARACTERS: lambda d: "may use only letters, digits and . _ : -",
    Reason.NOT_MONEY: lambda d: "is not a decimal amount such as 199.00",
    Reason.NOT_POSITIVE: lambda d: "must be greater than zero",
    Reason.ABOVE_MAX: lambda d: f"above the largest order allowed ({format_money(d['limit'])})",
    Reason.NEGATIVE: lambda d: "must not be negative",
    Reason.NO_TIMEZONE: lambda d: "must carry a time zone offset",
    Reason.IN_FUTURE: lambda d: "is in the future",
    Reason.TOO_OLD: lambda d: f"is older than {d['days']} days",
    Reason.UNKNOWN_KIND: lambda d: f"must be one of: {', '.join(d['kinds'])}",
    Reason.OFFSET_STEP: lambda d: f"must be a multiple of {d['step']}",
    Reason.OFFSET_CAP: lambda d: (
        f"at most {d['max_points']} points ({d['percent']}% of {format_money(d['amount'])})"
    ),
    Reason.OFFSET_BALANCE: lambda d: f"the balance is {d['balance']} points",
    Reason.COUPON_UNKNOWN: lambda d: "no such coupon",
    Reason.COUPON_OTHER_MEMBER: lambda d: "this coupon belongs to another member",
    Reason.COUPON_STATUS: lambda d: f"this coupon is {d['status']}",
    Reason.COUPON_NOT_VALID_NOW: lambda d: "this coupon is not valid at the time of the order",
    Reason.COUPON_MIN_SPEND: lambda d: (
        f"this coupon needs a minimum spend of {format_money(d['min_spend'])}"
    ),
    Reason.COUPON_JUST_USED: lambda d: "this coupon has just been used",
    Reason.REFUND_OVER_LEFT: lambda d: (
        f"only {format_money(d['left'])} of order {d['order_id']} is left to refund"
    ),
}
_MESSAGES = {
    "member_not_found": "no member with that code or phone number",
    "member_frozen": "the member is frozen",  # the staff's note stays out of the answer
    "idempotency_conflict": "the id was used before with a different body",
    "order_not_found": "no such order",
    "spend_proof_required": "spending points needs the member's one-time spend code (\"Pay "
    "with points\" in the chat) in `member`; the member code or phone only earns",
    "spend_code_unknown": "no such spend code",
    "spend_code_expired": "this spend code has expired: ask the member for a new one",
    "spend_code_used": "this spend code has already been used: ask the member for a new one",
    "card_code_refused": "this card code is not valid (any more): ask the member to show the "
    "card again",
}


PATTERN_MESSAGES = {
    "amount": "must be a decimal amount with ASCII digits and at most two decimals, from 0.01",
    "order_id": "must be 1 to 64 letters, digits or . _ : -",
    "refund_id": "must be 1 to 64 letters, digits or . _ : -",
    "event_id": "must be 1 to 64 letters, digits or . _ : -",
    "member": "must be a member code, a phone number or a spend code",
    "code_or_phone": "must be a member code, a phone number or a spend code",
    "coupon_code": "must be a coupon code",
}


def api_message(error: DomainError) -> str:
    """The English ``message`` of an API error, from its code, reason and values."""
    wording = REASON_MESSAGES.get(error.reason)
    if wording is not None:
        return wording(error.details)
    return _MESSAGES.get(error.code, error.default_message)


# What a till can do next with an order it posted (OpenAPI links, for clients and for the
# stateful contract tests).
ORDER_LINKS = {
    "RefundThisOrder": {
        "operationId": "post_refund",
        "parameters": {"order_id": "$response.body#/order_id"},
    },
    "LookUpItsMember": {
        "operationId": "get_member",
        "parameters": {"code_or_phone": "$response.body#/member_code"},
    },
}
OrderId = Annotated[str, Path(pattern=ID_PATTERN, description="the till's order id")]
MemberRef = Annotated[
    str, Path(pattern=MEMBER_PATTERN, description="member code or phone number, or spend code")
]


def build_router(program: Program) -> APIRouter:
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(_authorize)], responses=ERRORS)
    rule = AmountRule.of(program)

    @router.post(
        "/orders", status_code=201, response_model=OrderOut, summary="Post a sale",
        operation_id="post_order", responses={201: {"links": ORDER_LINKS}},
    )
    @_typed(body=rule.for_model(OrderIn, redeem_points=_redeem_points(program)))
    async def post_order(
        body: OrderIn, response: Response, session: SessionDep, shop: ShopDep, request: Request
    ) -> dict[str, Any]:
        """Apply the coupon and the points offset (100 points = 1.00, at most 50% of the order),
        earn points and growth on what remains to pay. The same `order_id` with the same body
        returns the first answer (header `Idempotent-Replayed: true`) and credits nothing.

        `member` is the member code or phone to earn (a coupon by its own code may be used),
        or the member's one-time spend code to also redeem points: without it `redeem_points`
        is refused (`spend_proof_required`, 403) and nothing changes."""
        outcome = await orders.place_order(
            session, shop,
            orders.OrderRequest(
                order_id=body.order_id, member=body.member, amount=_money(body.amount, "amount"),
                occurred_at=body.occurred_at, redeem_points=body.redeem_points,
                coupon_code=body.coupon_code,
            ),
        )
        _mark_replay(response, outcome.replayed)
        request.app.state.outbox_ready()
        return asdict(outcome.result)

    @router.post(
        "/orders/{order_id}/refunds", status_code=201, response_model=orders.RefundReceipt,
        summary="Refund part or all of an order", operation_id="post_refund",
    )
    @_typed(body=rule.for_model(RefundIn))
    async def post_refund(
        order_id: OrderId, body: RefundIn, response: Response, session: SessionDep,
        shop: ShopDep,
    ) -> dict[str, Any]:
        """Takes back the points and growth of the refunded share and returns its offset
        points; refunds never exceed the order; `refund_id` is idempotent."""
        outcome = await orders.refund_order(
            session, shop, order_id=order_id, refund_id=body.refund_id,
            amount=_money(body.amount, "amount"),
        )
        _mark_replay(response, outcome.replayed)
        return asdict(outcome.result)

    @router.get(
        "/members/{code_or_phone}", response_model=MemberOut, summary="Look a member up",
        operation_id="get_member",
    )
    @_typed(amount=rule.query())
    async def get_member(
        code_or_phone: MemberRef, session: SessionDep, shop: ShopDep, request: Request,
        amount: str | None = None,
    ) -> MemberOut:
        """What a cashier needs: the name to check against the person, tier and discount,
        balance, the largest offset for an amount, the usable coupons. By member code or phone
        the coupons come without their codes; by the member's spend code with them (the
        lookup does not use the spend code up)."""
        view = await till.look_up(
            session, shop, code_or_phone,
            amount=_money(amount, "amount") if amount is not None else None,
        )
        return MemberOut(
            code=view.code, name=view.name, tier=view.tier, tier_name=view.tier_name,
            discount_percent=view.discount_percent, balance=view.balance, growth=view.growth,
            max_offset_points=view.max_offset_points,
            max_offset_amount=format_money(view.max_offset_minor)
            if view.max_offset_minor is not None else None,
            can_redeem_points=view.can_redeem_points,
            coupons=[
                CouponOut(
                    code=c.code, kind=c.kind,
                    value=str(c.value) if c.kind == "percent_off" else format_money(c.value),
                    min_spend=format_money(c.min_spend), valid_until=c.valid_until,
                )
                for c in view.coupons
            ],
        )

    @router.post(
        "/members/{code_or_phone}/events", status_code=201, response_model=EventReceipt,
        summary="Report a behaviour (review, share)", operation_id="post_event",
    )
    async def post_event(
        code_or_phone: MemberRef, body: EventIn, response: Response, session: SessionDep,
        shop: ShopDep,
    ) -> dict[str, Any]:
        """Kinds: review, share; points and growth as the program says. Idempotent by
        `event_id`."""
        outcome = await record_event(
            session, shop, member_query=code_or_phone, event_id=body.event_id, kind=body.kind
        )
        _mark_replay(response, outcome.replayed)
        return asdict(outcome.result)

    return router


def _mark_replay(response: Response, replayed: bool) -> None:
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"


def install(app: FastAPI, program: Program) -> None:
    """The till API and its error answers on ``app``."""
    app.include_router(build_router(program))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths and methods answer in the API's error shape too; a body that is not
        # JSON at all is a wrong field like any other (422), not a bare 400.
        if exc.status_code == 400:
            return JSONResponse(
                {"error": "invalid_input", "message": "the body is not JSON", "field": None},
                status_code=422,
            )
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "message": str(exc.detail).lower(), "field": None},
            status_code=exc.status_code, headers=exc.headers,
        )

    @app.exception_handler(Unauthorized)
    async def unauthorized(_request: Request, _exc: Unauthorized) -> JSONResponse:
        return JSONResponse(
            {
                "error": "unauthorized", "message": "a valid bearer token is required",
                "field": None,
            },
            status_code=401, headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        status = (
            STATUS_BY_REASON.get(exc.reason) or STATUS_BY_CODE.get(exc.code)
            or (422 if isinstance(exc, InvalidInput) else 400)
        )
        body: dict[str, Any] = {
            "error": exc.code, "message": api_message(exc),
            "field": str(exc.details["field"]) if "field" in exc.details else None,
        }
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        location = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(location) or None
        message = str(first.get("msg", "invalid"))
        if first.get("type") == "string_pattern_mismatch":
            # The schema's pattern is for machines; the answer says it in words.
            message = PATTERN_MESSAGES.get(location[-1] if location else "", "is not well formed")
            if location and location[-1] == "amount":
                message = f"{message} up to {format_money(program.orders.max_amount)}"
        return JSONResponse(
            {"error": "invalid_input", "message": message, "field": field}, status_code=422
        )
