"""Every callback's data, as CallbackData classes: no magic strings anywhere else.

Ids in callback data are never trusted: each handler re-checks that the object belongs to the
member who pressed the button.
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class LanguageChoice(CallbackData, prefix="lang"):
    language: str


class PointsPage(CallbackData, prefix="pts"):
    page: int


class CheckinView(CallbackData, prefix="chk"):
    view: str  # "calendar" | "leaderboard"


class RewardView(CallbackData, prefix="rwv"):
    key: str  # a reward key from the program; "" for the catalog


class RewardRedeem(CallbackData, prefix="rwr"):
    key: str
    confirmed: bool
    # The confirmation screen's token (domain.rewards.confirmation_token): a press redeems only
    # with the token of the member's current count, so one screen redeems once, whatever is
    # pressed or crafted; an empty or made-up token is refused.
    # After it, ".<version>" when the item's version (domain.catalog) is above 0: the version
    # the screen showed, so a member is asked again after an admin's change. Kept inside the
    # token so buttons sent before the live catalog still parse (their version is 0).
    token: str = ""


class SpendCodeAsk(CallbackData, prefix="spd"):
    """"Pay with points" on the card: a new one-time spend code for the member who pressed."""


class CouponOpen(CallbackData, prefix="cpn"):
    coupon_id: int  # 0 for the list


class InviteView(CallbackData, prefix="inv"):
    view: str  # "link" | "leaderboard"


class ProfileAction(CallbackData, prefix="prf"):
    action: str  # "show" | "marketing_on" | "marketing_off" | "language" | "birthday" | "delete"


class ProfileLanguage(CallbackData, prefix="prl"):
    language: str  # chosen from the profile: the profile is shown again, in that language


class BirthdayPick(CallbackData, prefix="bday"):
    """One step of choosing a birthday from the profile: month, then day, then saving.

    Carries no member: every step acts on the member who pressed, and refuses once that
    member's birthday is set."""

    step: str  # "month" (choose the month) | "day" (choose the day) | "confirm" | "save"
    month: int = 0
    day: int = 0


class DeleteStep(CallbackData, prefix="del"):
    step: str  # "confirm" | "cancel" | "reason"
    reason: str = ""


class StatsView(CallbackData, prefix="st"):
    """A section or chart of /stats for a period; every press re-checks the admin."""

    view: str  # "summary" | a section ("members", ...) | a chart ("chart_pyramid", ...)
    period: str  # "this" | "last" | "3m" | "12m"


class PlusAction(CallbackData, prefix="plus"):
    """A press on /plus; every press acts on the member who pressed."""

    action: str  # "join" | "trial" | "cancel" | "resume"


class MemberCare(CallbackData, prefix="mc"):
    """A press on a member's card in /member (staff and admins; re-checked on every press)."""

    action: str  # "show" | "add" | "deduct" | "grant" | "cancel"
    member_id: int


class CareGrant(CallbackData, prefix="cgr"):
    """Grant the member a coupon from the template ``template`` (a key of the live catalog)."""

    member_id: int
    template: str


class AdjustConfirm(CallbackData, prefix="adj"):
    """An admin confirms a deduction that takes the balance below zero. What to deduct is the
    pressing admin's own pending conversation, never the button's data."""

    member_id: int


class CallbackOutcomeChoice(CallbackData, prefix="cbo"):
    """What came of calling a member on the call-back list."""

    code: str  # the member code
    outcome: str  # "called" | "no_answer" | "won_back"


class CatalogAction(CallbackData, prefix="cat"):
    """A press in /catalog (admins): the list, an item or template, a field to change."""

    action: str  # "list" | "templates" | "item" | "template" | "edit" | "set" | "toggle"
    # | "new" | "newkind" | "cancel"
    key: str = ""
    field: str = ""
    value: str = ""


class AuditPage(CallbackData, prefix="aud"):
    """A page of /audit (admins), for one member (``member_id``) or all (0), older than the
    line ``older_than`` (0: the newest)."""

    member_id: int = 0
    older_than: int = 0
class CampaignStep(CallbackData, prefix="cmp"):
    """A screen of the campaign being built (admins only; the draft is the presser's own)."""

    step: str  # "menu" | "audience" | "message" | "offer" | "when" | "preview" | "quit"


class CampaignEdit(CallbackData, prefix="cme"):
    """A change to the campaign being built: a filter toggled, a field to type, an offer."""

    field: str
    value: str = ""


class CampaignAction(CallbackData, prefix="cma"):
    """Confirm, cancel, stop or report one campaign (admins only; every press re-checked)."""

    action: str  # "confirm" | "cancel" | "stop" | "report"
    campaign_id: int


class NpsScore(CallbackData, prefix="nps"):
    """A member's score for a survey: recorded only for the member who pressed, and only when
    that member was sent that survey."""

    campaign_id: int
    score: int  # 0..10; -1: no comment
